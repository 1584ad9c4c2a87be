"""The import rules of the layout (docs/design.md, "Code layout"), function-local imports included:
nothing under pipeline/ imports targets/ (a package's ``__main__.py`` is an entry point and
may); core/ and llm/ import no family and core/ imports no llm/; no family imports another
(the scenario loop may use the assistant's contract); no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAMILIES = {"book", "l7", "scenario", "assistant"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (REPO / "pipeline").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (resolved to known modules or kept
    as written for outside ones)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    resolved = set()
    for dep in found:
        while dep not in modules and "." in dep and dep.startswith("pipeline"):
            dep = dep.rpartition(".")[0]
        resolved.add(dep)
    return resolved - {name}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_nothing_under_pipeline_imports_targets_but_entry_points():
    modules = _modules()
    bad = [f"{name} imports {dep}" for name, deps in _graph().items()
           for dep in deps if dep.split(".")[0] == "targets"
           and modules[name].name != "__main__.py"]
    assert bad == []


def test_core_and_llm_import_no_family_and_families_stay_apart():
    bad = []
    for name, deps in _graph().items():
        here = _area(name)
        for dep in deps:
            if not dep.startswith("pipeline."):
                continue
            there = _area(dep)
            if here in ("core", "llm") and there in FAMILIES:
                bad.append(f"{name} ({here}) imports the family module {dep}")
            if here == "core" and there == "llm":
                bad.append(f"{name} (core) imports {dep} (llm)")
            if (here in FAMILIES and there in FAMILIES and here != there
                    and (here, there) != ("scenario", "assistant")):
                bad.append(f"{name} imports another family: {dep}")
    assert bad == []


@pytest.mark.slow
def test_no_import_cycle():
    graph = {name: {d for d in deps if d in _modules()} for name, deps in _graph().items()}
    color: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        color[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if color.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif not color.get(nxt):
                visit(nxt)
        stack.pop()
        color[node] = 2

    for node in sorted(graph):
        if not color.get(node):
            visit(node)
    assert cycles == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The rules above can fail: a module importing targets is found."""
    bad = REPO / "pipeline" / "core" / "_layout_probe.py"
    bad.write_text("def f():\n    from targets import book\n", encoding="utf-8")
    try:
        graph = _graph()
    finally:
        bad.unlink()
    assert "targets.book.tasks" in graph["pipeline.core._layout_probe"] or \
        "targets" in graph["pipeline.core._layout_probe"]

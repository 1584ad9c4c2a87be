"""The commands of the docs, as a user types them: read from the fenced ``bash`` blocks of
README.md and docs/*.md and run in a fresh copy of the project, in the page's order.

A page may say, in an HTML comment right before a block, how the test treats some of its
lines (a short, visible mark; each names the start of the line it is about):

    <!-- docs-test: skip "doit fleet --scheduler" (a remote Dask cluster) -->
    <!-- docs-test: exit 1 "doit verify" -->
    <!-- docs-test: installed "pip install -e '.[local]'" -->
    <!-- docs-test: covered "SCENEMAKE_MODEL=local doit" by tests/book/test_x.py::test_y -->
    <!-- docs-test: fleet -->

``skip``: the line cannot run in a test (the reason is required, and the list stays short);
``exit N``: the exit code the docs give for it (else 0); ``installed``: a set-up step the
test's environment has already done (``A && B`` then runs B); ``covered``: a long run that
the named test runs: it must exist, and its file must name the line's command exactly; ``fleet``:
the page needs the shared cache, ``SCENEMAKE_CACHE_URL`` is the test's PostgreSQL.
Variables set on a line of their own (``M=...``, ``export X=...``) hold for the page's later
lines; a line ending in ``&`` runs in the background (until its first line of output) and
is stopped when the page ends.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
_MARK = re.compile(r"<!--\s*docs-test:(.*?)-->", re.S)
_ASSIGN = re.compile(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=\S*$")
_Q = r"""(?:"([^"]+)"|'([^']+)')"""  # the start of a line, in double or single quotes
_STATEMENT = re.compile(
    rf"\s*(?:(skip)\s+{_Q}\s*\(([^)]+)\)|(exit)\s+(\d+)\s+{_Q}"
    rf"|(installed)\s+{_Q}|(covered)\s+{_Q}\s+by\s+(\S+)|(fleet))\s*;?")


@dataclass
class Command:
    """One command line of a page."""

    page: str
    line: int  # in the page, for messages
    text: str  # as written (continuations joined)
    run: str | None  # what the test runs (None: not run)
    exit: int = 0
    why_not: str = ""  # skip: the reason; covered: the test
    covered_by: str = ""
    background: bool = False
    assign: bool = False


@dataclass
class Page:
    """A page's commands, in order, and what it needs."""

    path: Path
    commands: list[Command] = field(default_factory=list)
    fleet: bool = False

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO))


def _marks(text: str) -> dict:
    """The statements of the docs-test comments in ``text``."""
    out: dict = {"skip": {}, "exit": {}, "installed": [], "covered": {}, "fleet": False}
    for comment in _MARK.findall(text):
        rest = comment.strip()
        while rest:
            m = _STATEMENT.match(rest)
            if not m or not m.group(0).strip():
                raise ValueError(f"docs-test mark not understood: {rest!r}")
            g = m.groups()
            if g[0]:
                out["skip"][g[1] or g[2]] = g[3].strip()
            elif g[4]:
                out["exit"][g[6] or g[7]] = int(g[5])
            elif g[8]:
                out["installed"].append(g[9] or g[10])
            elif g[11]:
                out["covered"][g[12] or g[13]] = g[14]
            else:
                out["fleet"] = True
            rest = rest[m.end():].strip()
    return out


def _lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Command lines of a block: continuations joined, comment-only lines dropped."""
    out, pending, start = [], "", 0
    for number, raw in block:
        line = raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        whole = (pending + line.strip()).strip()
        pending = ""
        if whole and not whole.startswith("#"):
            out.append((start, whole))
    return out


def _match(text: str, prefixes) -> str | None:
    return next((p for p in prefixes if text.startswith(p)), None)


def read_page(path: Path) -> Page:
    """The commands of ``path``'s shell blocks, with the marks that apply to them."""
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    i, before = 0, []
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            before.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        # the marks: the docs-test comments since the previous block
        marks = _marks("\n".join(before))
        page.fleet |= marks["fleet"]
        if fence.group(2) in SHELLS:
            block = [(n + 1, lines[n]) for n in range(i + 1, j)]
            for number, text in _lines(block):
                page.commands.append(_command(page.name, number, text, marks))
        before = []
        i = j + 1
    return page


def _command(page: str, number: int, text: str, marks: dict) -> Command:
    cmd = Command(page, number, text, text)
    code = _strip_comment(text)
    if _ASSIGN.match(code):
        cmd.assign = True
    skip = _match(text, marks["skip"])
    covered = _match(text, marks["covered"])
    installed = _match(text, marks["installed"])
    if skip:
        cmd.run, cmd.why_not = None, marks["skip"][skip]
    elif covered:
        cmd.run, cmd.covered_by = None, marks["covered"][covered]
    elif installed:
        rest = code[len(installed):].strip()
        cmd.run = rest[2:].strip() if rest.startswith("&&") else None
        cmd.why_not = "installed already"
    if cmd.run is not None:
        run = _strip_comment(cmd.run)
        if run.endswith("&") and not run.endswith("&&"):
            cmd.background, cmd.run = True, run[:-1].strip()
    exit_for = _match(text, marks["exit"])
    if exit_for:
        cmd.exit = marks["exit"][exit_for]
    return cmd


def _strip_comment(text: str) -> str:
    """``text`` without a trailing ``# comment`` (quotes respected)."""
    quote, out = None, []
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or text[k - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def covered(command: Command) -> str:
    """'' when the test named by a ``covered`` mark exists and its file runs the command as
    written (the command appears there exactly, e.g. in the docstring of the helper or
    module that runs it); else what is wrong."""
    file, _, name = command.covered_by.partition("::")
    path = REPO / file
    if not path.is_file():
        return f"{command.covered_by}: no such test file"
    source = path.read_text(encoding="utf-8")
    names = {node.name for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.FunctionDef)}
    if name not in names:
        return f"{command.covered_by}: no test named {name}"
    want = _strip_comment(command.text)
    return "" if want in source else f"{file} does not say it runs {want!r}"


# -- running a page ------------------------------------------------------------------------
def shims(folder: Path) -> Path:
    """``doit``, ``python3``, ``python`` and the console scripts, as this test's Python runs
    them (the docs say ``doit`` is ``python3 -m doit``)."""
    folder.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    scripts = {"doit": f'exec "{python}" -m doit "$@"',
               "python3": f'exec "{python}" "$@"', "python": f'exec "{python}" "$@"'}
    for name in ("scenemake-l7", "scenemake-scenario", "scenemake-stage",
                 "scenemake-assistant"):
        beside = Path(python).parent / name
        scripts[name] = f'exec "{beside}" "$@"'
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return folder


@dataclass
class Ran:
    command: Command
    code: int
    out: str


class Shell:
    """Runs a page's commands in ``root``, one ``bash -c`` each, with the page's variables."""

    def __init__(self, root: Path, bin_dir: Path, env: dict[str, str] | None = None):
        self.root = root
        self.prelude: list[str] = []
        self.background: list[subprocess.Popen] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMAKE_")}
        self.env = {**base, **(env or {}), "PYTHONUNBUFFERED": "1",
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _script(self, text: str) -> str:
        return "\n".join([*self.prelude, text])

    def run(self, command: Command, timeout: float = 900) -> Ran:
        if command.assign:
            self.prelude.append(_strip_comment(command.run or command.text))
            return Ran(command, 0, "")
        if command.background:
            return self._start(command)
        proc = subprocess.run(["bash", "-c", self._script(command.run)], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        return Ran(command, proc.returncode, proc.stdout + proc.stderr)

    def _start(self, command: Command) -> Ran:
        proc = subprocess.Popen(["bash", "-c", "exec " + self._script(command.run)],
                                cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.background.append(proc)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout=120)  # a server coming up; not a timing assertion
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe open
        code = proc.poll()
        return Ran(command, 0 if code is None else code, "".join(first))

    def close(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

"""Every skip of a test goes through the requirement helpers (tests/support/parts.py), which
fail under ``CI=true``: a direct ``pytest.skip`` (or ``skipif``, ``importorskip``) would let
CI pass without running a real-part test (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ALLOWED = {TESTS / "support" / "parts.py"}  # the one place that may skip
SKIPS = {"skip", "skipif", "importorskip", "xfail"}


def direct_skips(source: str) -> list[int]:
    """Line numbers of ``pytest.skip(...)``, ``pytest.mark.skip[if]``, ``pytest.importorskip``,
    ``pytest.xfail`` and ``from pytest import skip`` in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in SKIPS:
            base = node.value
            if isinstance(base, ast.Attribute) and base.attr == "mark":
                base = base.value
            if isinstance(base, ast.Name) and base.id == "pytest":
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "pytest":
            if any(alias.name in SKIPS for alias in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_finder_finds_each_kind():
    source = ("import pytest\nfrom pytest import skip\npytest.skip('x')\n"
              "@pytest.mark.skipif(True, reason='x')\ndef f(): pass\n"
              "pytest.importorskip('m')\npytest.mark.skip\nrequire(False, 'a', 'b')\n")
    assert direct_skips(source) == [2, 3, 4, 6, 7]


def test_no_test_skips_directly():
    found = [f"{path.relative_to(TESTS.parent)}:{line}"
             for path in sorted(TESTS.rglob("*.py")) if path not in ALLOWED
             for line in direct_skips(path.read_text(encoding="utf-8"))]
    assert found == [], ("skip through support.parts.require (it fails under CI=true), "
                         f"not directly: {found}")

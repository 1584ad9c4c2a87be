"""An edit that keeps a file's size and puts its mtime back (issue 15, item 11): a plain doit
trusts (mtime, size) like make and does not see it; ``doit verify`` re-hashes every
recorded file, reports it, and makes the next doit apply its usual rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.project import Project, executed

pytestmark = pytest.mark.slow


def _edit_behind_mtime(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_verify_reveals_an_artifact_edited_behind_its_mtime(built: Project):
    prose = built.artifact("ch001_sc002", "write/prose.md")
    text = prose.read_bytes()
    _edit_behind_mtime(prose, text[:12], text[:12].swapcase())

    plain = built.doit()
    assert plain.returncode == 0 and executed(plain) == ["guard"]  # the make-like contract

    verify = built.doit("verify")
    assert verify.returncode == 1, verify.out
    assert "write/prose.md" in verify.stdout and "Traceback" not in verify.out

    after = built.doit()
    assert after.returncode != 0
    assert "edited by hand" in after.out and "write/prose.md" in after.out


def test_the_books_own_inputs_are_read_by_content_whatever_their_mtime(built: Project):
    """outline.json, book.json, state.json and the templates are compared by content: an
    edit that kept the size and put the mtime back is still an edit, no verify needed."""
    calls = len(built.calls())
    _edit_behind_mtime(built.book / "outline.json", b"The Last Ferry", b"The Last Fairy")
    again = built.build()
    assert "plan:ch001_sc001" in executed(again)  # the changed outline was read
    assert built.misses(since=calls)  # and the new request paid
    assert built.doit("verify").returncode == 0


def test_verify_on_an_unchanged_book(built: Project):
    verify = built.doit("verify")
    assert verify.returncode == 0 and "every recorded file matches" in verify.stdout

"""``doit list --all --status | head`` (issue 15, item 12): a closed pipe ends the command
quietly, as it does for other command-line tools."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from support.project import Project

pytestmark = pytest.mark.slow


def _long_book(project: Project) -> None:
    """Enough scenes that the listing outgrows a pipe's buffer (64 KB)."""
    outline = json.loads((project.book / "outline.json").read_text())
    chapters = outline["chapters"]
    for n in range(3, 60):
        chapter = copy.deepcopy(chapters[1])
        chapter["id"] = f"ch{n:03d}"
        for scene in chapter["scenes"]:
            scene["id"] = chapter["id"] + scene["id"][5:]
            scene.pop("new_characters", None)
            scene.pop("new_locations", None)
        chapters.append(chapter)
    (project.book / "outline.json").write_text(json.dumps(outline))


@pytest.mark.parametrize("args", [("list", "--all", "--status"), ("list",), ("help",),
                                  ("rerun-from", "--dry-run", "--all")])
def test_a_closed_pipe_ends_a_command_quietly(project: Project, args: tuple[str, ...]):
    _long_book(project)
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline()  # like `| head -1`: one line, then the reader is gone
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert proc.returncode in (0, 141)  # 141: the shell's code for a closed pipe

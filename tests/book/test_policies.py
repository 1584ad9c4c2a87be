"""The template-change rule and the atomic writer, as plain functions."""

from __future__ import annotations

import os
import stat

from pipeline.book.rules import changed_templates
from pipeline.core.store import atomic_write_text


def _t(path: str, digest: str) -> dict:
    return {"path": path, "hash": digest}


def test_a_moved_install_of_the_default_templates_is_no_prompt_change():
    old = {"phase": _t("/old/venv/site/pipeline/templates/write.j2", "h1")}
    now = {"phase": _t("/work/new/pipeline/book/templates/write.j2", "h1")}
    assert changed_templates(old, now) == []


def test_an_override_replacing_a_default_is_a_change_even_with_equal_content():
    old = {"phase": _t("/work/pipeline/templates/write.j2", "h1")}
    now = {"phase": _t("workspace/books/b/templates/write.j2", "h1")}
    [change] = changed_templates(old, now)
    assert change.old_path.endswith("pipeline/templates/write.j2")


def test_edited_template_is_a_change():
    [change] = changed_templates({"system": _t("t/system.j2", "a")},
                                 {"system": _t("t/system.j2", "b")})
    assert (change.old_hash, change.new_hash) == ("a", "b")


def test_artifacts_get_the_users_usual_permissions(tmp_path):
    path = tmp_path / "a" / "prose.md"
    atomic_write_text(path, "text")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["prose.md"]  # no temp file left

"""The resume rules of the spec (Integrity / Coherency Rules) as checks on the build DB.

- a changed template fails fast unless ``allow_prompt_change=1 reason=...``;
- a generated artifact edited by hand fails fast unless ``force_resume=1``;
- a changed pre-state reruns the phase unless ``force_resume=1``.
The guard task runs these over the whole book before any LLM call, so one report lists
everything; each phase repeats the checks that concern it, so ``doit -s`` is safe too.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field

from pipeline.book.runvars import RunVars
from pipeline.book.workspace import default_template_home
from pipeline.core import filestate
from pipeline.core.builddb import SceneDB
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file, hash_known


class PolicyError(UserError):
    """A rule stopped the run; the message is a short multi-line report."""


@dataclass
class TemplateChange:
    path: str
    old_hash: str | None
    new_hash: str | None
    old_path: str | None = None
    tasks: list[str] = field(default_factory=list)


@dataclass
class Edit:
    path: str
    task_id: str
    old_hash: str
    new_state: list


def current_templates(templates: dict[str, str],
                      recorded_states: dict[str, list] | None = None,
                      seen: dict[str, str | None] | None = None) -> dict[str, dict]:
    """role -> {path, hash} for the templates a phase renders now.

    ``recorded_states`` (path -> [mtime_ns, size, hash], as the file checker saved them)
    lets an untouched template skip hashing; ``seen`` shares results between phases.
    """
    out = {}
    for role, path in templates.items():
        digest = seen.get(path, "") if seen is not None else ""
        if digest == "":
            try:
                digest = hash_known(path, (recorded_states or {}).get(path))
            except FileNotFoundError:
                digest = None
            if seen is not None:
                seen[path] = digest
        out[role] = {"path": path, "hash": digest}
    return out


def _same_default(old: dict, cur: dict) -> bool:
    """The package's own template, found at another install path, with the same content."""
    return (old.get("hash") == cur["hash"]
            and default_template_home(old["path"]) is not None
            and default_template_home(cur["path"]) is not None
            and old["path"].rpartition("/")[2] == cur["path"].rpartition("/")[2])


def changed_templates(recorded: dict | None, now: dict[str, dict]) -> list[TemplateChange]:
    """What differs between the templates a phase last used and the ones it would use."""
    if not recorded:
        return []
    changes = []
    for role, cur in now.items():
        old = recorded.get(role)
        if old is None:
            continue
        if old["path"] != cur["path"] and not _same_default(old, cur):
            changes.append(TemplateChange(cur["path"], old.get("hash"), cur["hash"],
                                          old_path=old["path"]))
        elif old.get("hash") != cur["hash"]:
            changes.append(TemplateChange(cur["path"], old.get("hash"), cur["hash"]))
    return changes


def find_template_changes(db: SceneDB, task_templates: dict[str, dict[str, str]]
                          ) -> list[TemplateChange]:
    """Every template changed since a phase last succeeded, with the phases affected."""
    merged: dict[tuple, TemplateChange] = {}
    seen: dict[str, str | None] = {}
    for task_id, templates in task_templates.items():
        recorded = db.values(task_id).get("template_set")
        if not recorded:
            continue
        states = {p: db.get(task_id, p) for p in templates.values()}
        for ch in changed_templates(recorded, current_templates(templates, states, seen)):
            key = (ch.path, ch.old_path, ch.old_hash, ch.new_hash)
            merged.setdefault(key, ch).tasks.append(task_id)
    return list(merged.values())


def _short(h: str | None) -> str:
    return h[:12] if h else "missing"


def template_report(changes: list[TemplateChange]) -> str:
    lines = [f"{len(changes)} prompt template(s) changed since the phases that use them last ran:"]
    for ch in changes:
        where = f"{ch.old_path} -> {ch.path}" if ch.old_path else ch.path
        tasks = ", ".join(ch.tasks[:6]) + (f" and {len(ch.tasks) - 6} more"
                                           if len(ch.tasks) > 6 else "")
        lines.append(f"  {where}: {_short(ch.old_hash)} -> {_short(ch.new_hash)}"
                     f" ({len(ch.tasks)} task(s): {tasks})")
    return "\n".join(lines)


def accepted(change: TemplateChange, rv: RunVars) -> bool:
    """The change brings in a template that ``doit accept`` made the book's (a try's)."""
    return (change.path, change.new_hash) in rv.accepted


def prompt_update_reason(changes: list[TemplateChange], rv: RunVars) -> str:
    """The reason a phase's prompt change is recorded with: the accepted try's when every
    change is one it brought in, else the run's ``reason=``."""
    if changes and all(accepted(ch, rv) for ch in changes):
        return rv.accepted_reason
    return rv.reason


def require_prompt_change_allowed(changes: list[TemplateChange], rv: RunVars) -> None:
    """Refuse template changes unless allowed with a reason, or accepted from a try (no LLM
    call happens before)."""
    changes = [ch for ch in changes if not accepted(ch, rv)]
    if not changes:
        return
    if not rv.allow_prompt_change:
        raise PolicyError(template_report(changes) + "\nNothing was rebuilt. To rebuild "
                          "with the new prompts: doit allow_prompt_change=1 reason=\"why\"")
    if not rv.reason:
        raise PolicyError("allow_prompt_change=1 needs a reason: "
                          "doit allow_prompt_change=1 reason=\"why the prompt changed\"")


def find_edits(db: SceneDB, paths: list[str] | None = None) -> list[Edit]:
    """Generated artifacts (all, or those at ``paths``) whose content is none the build
    wrote: edited by hand."""
    edits = []
    for path, task_id, known_raw, state_raw in db.output_rows(paths):
        st_rec = json.loads(state_raw) if state_raw else None
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # a missing artifact is rebuilt, not an edit
        if not stat.S_ISREG(st.st_mode):
            continue  # a folder in its place: the rebuild's write says what is in the way
        if st_rec and st.st_mtime_ns == st_rec[0] and st.st_size == st_rec[1]:
            continue
        digest = hash_file(path, st)
        known = json.loads(known_raw)
        if digest not in known:
            edits.append(Edit(path, task_id, known[-1], [st.st_mtime_ns, st.st_size, digest]))
    return edits


def edit_report(edits: list[Edit]) -> str:
    lines = [f"{len(edits)} generated file(s) edited by hand:"]
    for e in edits:
        lines.append(f"  {e.path} (written by {e.task_id}): "
                     f"{_short(e.old_hash)} -> {_short(e.new_state[2])}")
    return "\n".join(lines)


def handle_edits(db: SceneDB, edits: list[Edit], rv: RunVars) -> list[str]:
    """Refuse hand edits, or with ``force_resume=1`` accept them (recorded); returns task ids."""
    if not edits:
        return []
    if not rv.force_resume:
        first = edits[0].task_id
        raise PolicyError(edit_report(edits) + "\nNothing was rebuilt. To build on the edits: "
                          f"doit force_resume=1; to regenerate: doit rerun-from {first}")
    touched = []
    for e in edits:
        db.add_event(e.task_id, "manual_edit",
                     {"path": e.path, "hash_prev": e.old_hash, "hash_new": e.new_state[2]})
        db.settle_outputs(e.task_id, {e.path: e.new_state})
        touched.append(e.task_id)
    return touched


def stale_state_acceptable(prev: dict, changed: list[str], state_path: str | None,
                           inputs_hash: str, templates_now: dict[str, dict],
                           outputs: dict[str, str], db: SceneDB, task_id: str) -> bool:
    """True when only the pre-state changed under a phase whose outputs are intact."""
    if not prev or not state_path or not changed or set(changed) != {state_path}:
        return False
    if prev.get("inputs_hash") != inputs_hash:
        return False
    if changed_templates(prev.get("template_set"), templates_now):
        return False
    recorded = db.outputs_of(task_id)
    for path in outputs.values():
        rec = recorded.get(path)
        if rec is None or not filestate.matches(path, rec["state"]):
            return False
    return True

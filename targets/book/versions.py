"""doit commands over the kept versions of a phase's artifacts: ``history``, ``diff``,
``restore``, ``gc`` (the store itself: pipeline/book/versions.py)."""

from __future__ import annotations

from doit.cmd_base import DoitCmdBase

from pipeline.core.errors import UserError
from targets.book.run import of_command
from targets.command import command_db

HIDDEN = ("prompt", "response")  # shown by diff --all only: long, and what they say is above


def _task(book, arg: str):
    """(book, task id, the phase's files name -> path) for ``PHASE:SCENE``."""
    from pipeline.book import phases
    from pipeline.book.workspace import PHASES, check_scene_id

    phase, _, sid = arg.partition(":")
    if phase not in PHASES or not sid:
        raise UserError(f"'{arg}' is not PHASE:SCENE", fix=f"e.g. write:ch001_sc001 (phases: "
                        f"{', '.join(PHASES)})")
    check_scene_id(sid)
    book.scene(sid)
    return book, arg, phases.layout(book, sid)[phase].outputs


def _store(book):
    from pipeline.book.versions import Versions

    return Versions(book.workspace.state_dir, book.name)


def _number(text: str) -> int:
    try:
        return int(text.lstrip("v"))
    except ValueError:
        raise UserError(f"'{text}' is not a version number",
                        fix="doit history PHASE:SCENE lists them (1, 2, ...)") from None


class _VersionCommand(DoitCmdBase):
    """Shared frame: the scenemake check, one-line errors, the DB closed at the end."""

    cmd_options = ()
    usage_hint = ""

    def _execute(self, pos_args=None):
        return self._guarded(pos_args)

    def _guarded(self, pos_args, **opts) -> int:
        with command_db(self.name, self.dep_manager) as db:
            return self.run(db, list(pos_args or []), **opts)

    def run(self, db, args: list[str], **opts) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class History(_VersionCommand):
    """``doit history PHASE:SCENE``: the kept versions of a phase's artifacts."""

    name = "history"
    doc_purpose = "list the kept versions of a phase's artifacts (why each was made)"
    doc_usage = "PHASE:SCENE"
    doc_description = "* marks the version whose files are on disk now."

    def run(self, db, args, **opts) -> int:
        from pipeline.book.versions import current_matches

        if len(args) != 1:
            raise UserError("history needs one PHASE:SCENE",
                            fix="e.g. doit history write:ch001_sc001")
        book, task_id, files = _task(of_command(self).book, args[0])
        versions = _store(book).history(task_id)
        if not versions:
            self.outstream.write(f"{task_id}: no kept versions yet (build it first)\n")
            return 0
        self.outstream.write(f"{task_id}: {len(versions)} version(s), oldest first "
                             "(* = the files on disk now)\n")
        for entry in versions:
            mark = "*" if current_matches(files, entry) else " "
            when = (entry.get("timestamp") or "-").replace("T", " ").rstrip("Z")
            attempt = f"attempt {entry['attempt']}" if "attempt" in entry else ""
            prompt = f"prompt {entry['prompt_hash'][:8]}" if entry.get("prompt_hash") else ""
            self.outstream.write(f"{mark} v{entry['version']:<3} {when:19}  {attempt:10} "
                                 f"{prompt:15} {entry.get('reason', '')}\n")
        return 0


opt_all = {"name": "show_all", "long": "all", "type": bool, "default": False,
           "help": "also diff the rendered prompt and the raw response"}


class Diff(_VersionCommand):
    """``doit diff PHASE:SCENE [A B]``: what changed between two versions."""

    name = "diff"
    doc_purpose = "show what changed between two versions of a phase's artifacts"
    doc_usage = "PHASE:SCENE [A B]"
    doc_description = ("Without A B: the last two versions. Prose as a word diff "
                       "([-old-]{+new+}), cards and patches as a JSON diff (~ changed, + added, "
                       "- removed).")
    cmd_options = (opt_all,)

    def _execute(self, pos_args=None, show_all=False):
        return self._guarded(pos_args, show_all=show_all)

    def run(self, db, args, show_all=False, **opts) -> int:
        from pipeline.book.versions import diff_files

        if len(args) not in (1, 3):
            raise UserError("diff needs PHASE:SCENE, optionally two versions",
                            fix="e.g. doit diff write:ch001_sc001 1 2")
        book, task_id, _files = _task(of_command(self).book, args[0])
        store = _store(book)
        versions = store.history(task_id)
        if len(args) == 3:
            old, new = store.version(task_id, _number(args[1])), store.version(
                task_id, _number(args[2]))
        elif len(versions) < 2:
            self.outstream.write(f"{task_id}: {len(versions)} version(s) kept, nothing to "
                                 "compare yet\n")
            return 0
        else:
            old, new = versions[-2], versions[-1]
        names = [n for n in dict.fromkeys(list(old["files"]) + list(new["files"]))
                 if show_all or n not in HIDDEN]
        # every file of both versions is checked against its hash before anything is shown
        blobs = [(name, store.content(task_id, old, name) if name in old["files"] else None,
                  store.content(task_id, new, name) if name in new["files"] else None)
                 for name in names]
        self.outstream.write(f"{task_id}: version {old['version']} -> {new['version']} "
                             f"({new.get('reason', '')})\n")
        shown = 0
        for name, a, b in blobs:
            lines = diff_files(name, a, b)
            if lines:
                shown += 1
                self.outstream.write("\n".join(lines).rstrip("\n") + "\n")
        if not shown:
            self.outstream.write("no difference" + ("" if show_all else
                                                    " (--all compares prompt and response too)")
                                 + "\n")
        return 0


class Restore(_VersionCommand):
    """``doit restore PHASE:SCENE VERSION``: put a kept version back, with no LLM call."""

    name = "restore"
    doc_purpose = "put a kept version of a phase's artifacts back (no LLM call)"
    doc_usage = "PHASE:SCENE VERSION"
    doc_description = ("Records it in the build DB as the phase's output, so no hand edit is "
                       "seen; what depends on it rebuilds on it at the next doit.")

    def run(self, db, args, **opts) -> int:
        from pipeline.book import ledger
        from pipeline.book.versions import file_state
        from pipeline.core.builddb import now_iso
        from pipeline.core.store import atomic_write_many

        if len(args) != 2:
            raise UserError("restore needs PHASE:SCENE and a version",
                            fix="e.g. doit restore write:ch001_sc001 1 (doit history lists them)")
        book, task_id, files = _task(of_command(self).book, args[0])
        store = _store(book)
        entry = store.version(task_id, _number(args[1]))
        if not db.values(task_id):
            raise UserError(f"{task_id} has no record in the build DB",
                            fix="build it first (doit), then restore")
        # every file checked against its hash before any is written: all or nothing
        data = {files[name]: store.content(task_id, entry, name) for name in entry["files"]
                if name in files}
        atomic_write_many(data)
        hashes = {files[name]: digest for name, digest in entry["files"].items() if name in files}
        db.announce_outputs(task_id, hashes)
        db.settle_outputs(task_id, {path: file_state(path, digest)
                                    for path, digest in hashes.items()})
        db.add_event(task_id, "restored", {"version": entry["version"]})
        meta = {k: v for k, v in entry.items()
                if k not in ("version", "files", "reason", "attempt")}
        # the attempt now, not the version's: a later rebuild is not taken for a rerun
        meta.update(timestamp=now_iso(), reason=f"restored version {entry['version']}",
                    attempt=db.attempt(task_id))
        store.add(task_id, files, meta)
        ledger.export(db, book, task_id.partition(":")[2])
        self.outstream.write(f"{task_id}: version {entry['version']} restored ({len(data)} "
                             "file(s), no LLM call); what depends on it rebuilds at the next "
                             "doit\n")
        return 0


class Gc(_VersionCommand):
    """``doit gc``: delete kept files no version refers to any more."""

    name = "gc"
    doc_purpose = "delete kept artifact versions beyond the limit (the first and last 19 stay)"
    doc_usage = ""
    doc_description = None

    def run(self, db, args, **opts) -> int:
        if args:
            raise UserError("gc takes no arguments")
        book = of_command(self).book
        count, size = _store(book).gc()
        self.outstream.write(f"gc: deleted {count} kept file(s) ({size} bytes) that no "
                             "version refers to\n")
        damaged = damaged_versions(book)
        for line in damaged:
            self.outstream.write(f"damaged: {line}\n")
        if damaged:
            self.outstream.write(f"{len(damaged)} kept file(s) cannot be trusted; they are "
                                 "never shown or restored (doit rerun-from PHASE:SCENE "
                                 "builds a phase afresh)\n")
            return 1
        return 0


def damaged_versions(book) -> list[str]:
    """One line per kept file of ``book`` that is missing, damaged, a link or named by no
    hash, and per version index that cannot be read (``doit gc`` and ``doit verify``)."""
    return [d.line() for d in _store(book).damage()]

"""doit commands over the kept versions of a phase's artifacts: ``history``, ``diff``,
``restore``, ``gc`` (the store itself: pipeline/book/versions.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import UserError
from targets.book.run import of_command
from targets.command import BookCommand

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

    return Versions(book.workspace.state_dir, book.versions_name)


def _tried(book, task_id: str, arg: str) -> dict:
    """``try:NAME``: that try's files of the phase as a version-like entry (its blobs with
    it), one line when the try or its files are not there."""
    from pipeline.book import phases, tries

    area = tries.Area(book.workspace, book.name, tries.check_name(arg[4:]))
    meta = area.meta()
    view = tries.side(area, meta).book(book)
    phase, _, sid = task_id.partition(":")
    entry = _on_disk(phases.layout(view, sid)[phase].outputs, arg,
                     f"try {area.name}: {meta.get('reason') or 'its templates'}")
    if not entry["files"]:
        raise UserError(f"try {area.name} has not built {task_id}",
                        fix=f"doit try {area.name} {sid}")
    return entry


def _on_disk(files: dict[str, str], label: str = "the book's files",
             reason: str = "on disk now") -> dict:
    """A phase's files (name -> path) as they are now, as a version-like entry."""
    from pipeline.core.hashing import hash_bytes

    blobs, hashes = {}, {}
    for name, path in files.items():
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        hashes[name] = hash_bytes(data)
        blobs[hashes[name]] = data
    return {"version": label, "files": hashes, "blobs": blobs, "reason": reason}


def _entry(store, book, task_id: str, arg: str) -> dict:
    """A version number, or ``try:NAME`` (a try's files of the phase)."""
    if arg.startswith("try:"):
        return _tried(book, task_id, arg)
    return store.version(task_id, _number(arg))


def _number(text: str) -> int:
    try:
        return int(text.lstrip("v"))
    except ValueError:
        raise UserError(f"'{text}' is not a version number",
                        fix="doit history PHASE:SCENE lists them (1, 2, ...)") from None


class History(BookCommand):
    """``doit history PHASE:SCENE``: the kept versions of a phase's artifacts."""

    name = "history"
    doc_purpose = "list the kept versions of a phase's artifacts (why each was made)"
    doc_usage = "PHASE:SCENE"
    doc_description = "* marks the version whose files are on disk now."

    def run(self, db, args) -> int:
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
        self._tries(book, task_id)
        return 0

    def _tries(self, book, task_id: str) -> None:
        """The tries that built this phase too, each with how to see it against the book."""
        from pipeline.book import tries

        for name in tries.names(book.workspace, book.name):
            try:
                entry = _tried(book, task_id, f"try:{name}")
            except UserError:
                continue  # not built by that try
            same = entry["files"] == _on_disk(_task(book, task_id)[2])["files"]
            self.outstream.write(f"  try:{name:<10} {entry['reason']}: "
                                 + ("the same files as the book's\n" if same else
                                    f"doit diff {task_id} try:{name}\n"))


opt_all = {"name": "show_all", "long": "all", "type": bool, "default": False,
           "help": "also diff the rendered prompt and the raw response"}


class Diff(BookCommand):
    """``doit diff PHASE:SCENE [A B]``: what changed between two versions."""

    name = "diff"
    doc_purpose = "show what changed between two versions of a phase's artifacts"
    doc_usage = "PHASE:SCENE [A B | try:NAME]"
    doc_description = ("Without A B: the last two versions; A and B are version numbers or "
                       "try:NAME (that try's files); try:NAME alone: the book's files now "
                       "against the try's. Prose as a word diff "
                       "([-old-]{+new+}), cards and patches as a JSON diff (~ changed, + added, "
                       "- removed).")
    cmd_options = (opt_all,)

    def run(self, db, args, show_all=False) -> int:
        from pipeline.book.versions import diff_files

        if len(args) not in (1, 2, 3) or (len(args) == 2 and not args[1].startswith("try:")):
            raise UserError("diff needs PHASE:SCENE, optionally two versions (a number, or "
                            "try:NAME for a try's files), or try:NAME alone",
                            fix="e.g. doit diff write:ch001_sc001 1 2, or doit diff "
                                "write:ch001_sc001 try:terse")
        book, task_id, files = _task(of_command(self).book, args[0])
        store = _store(book)
        versions = store.history(task_id)
        if len(args) == 3:
            old, new = (_entry(store, book, task_id, args[1]),
                        _entry(store, book, task_id, args[2]))
        elif len(args) == 2:  # the book's files now against a try's
            old, new = _on_disk(files), _tried(book, task_id, args[1])
        elif len(versions) < 2:
            self.outstream.write(f"{task_id}: {len(versions)} version(s) kept, nothing to "
                                 "compare yet\n")
            return 0
        else:
            old, new = versions[-2], versions[-1]
        names = [n for n in dict.fromkeys(list(old["files"]) + list(new["files"]))
                 if show_all or n not in HIDDEN]
        def content(entry: dict, name: str) -> bytes | None:
            if name not in entry["files"]:
                return None
            if "blobs" in entry:  # a try's files, or the book's on disk: read just now
                return entry["blobs"][entry["files"][name]]
            return store.content(task_id, entry, name)

        # every kept file of both versions is checked against its hash before anything shows
        blobs = [(name, content(old, name), content(new, name)) for name in names]

        def label(entry: dict) -> str:
            v = entry["version"]
            return f"version {v}" if isinstance(v, int) else str(v)

        numbers = isinstance(old["version"], int) and isinstance(new["version"], int)
        head = (f"version {old['version']} -> {new['version']}" if numbers else
                f"{label(old)} -> {label(new)}")
        self.outstream.write(f"{task_id}: {head} ({new.get('reason', '')})\n")
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


class Restore(BookCommand):
    """``doit restore PHASE:SCENE VERSION``: put a kept version back, with no LLM call."""

    name = "restore"
    doc_purpose = "put a kept version of a phase's artifacts back (no LLM call)"
    doc_usage = "PHASE:SCENE VERSION"
    doc_description = ("Records it in the build DB as the phase's output, so no hand edit is "
                       "seen; what depends on it rebuilds on it at the next doit.")

    def run(self, db, args) -> int:
        from pipeline.book import ledger
        from pipeline.book.versions import file_state
        from pipeline.core.builddb import now_iso
        from pipeline.core.store import atomic_write_many

        if len(args) != 2:
            raise UserError("restore needs PHASE:SCENE and a version",
                            fix="e.g. doit restore write:ch001_sc001 1 (doit history lists them)")
        book, task_id, files = _task(of_command(self).book, args[0])
        if args[1].startswith("try:"):
            name = args[1][4:]
            raise UserError(f"a try's files come into the book with its templates, not one by "
                            f"one: doit accept {name} reason=\"...\" (the next doit records "
                            "the prompt change and takes the try's answers)",
                            fix=f"doit diff {task_id} {args[1]} shows what would change")
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


class Gc(BookCommand):
    """``doit gc``: delete kept files no version refers to any more."""

    name = "gc"
    doc_purpose = "delete kept files that no version refers to any more"
    doc_usage = ""
    doc_description = ("Each phase of a scene keeps its first version and its last 19: adding a "
                       "version drops the entries beyond that limit from the index, and their "
                       "files stay until gc deletes them. Nothing else deletes kept files.")

    def run(self, db, args) -> int:
        from targets.book.run import of_command

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

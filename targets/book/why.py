"""``doit why TASK``: why a task would run, in the user's terms, through what it depends on.

doit's own status (``doit info``) is per task and speaks of file hashes; a phase whose
pre-state will change upstream shows as up to date there. ``why`` walks the task's
upstream too and names causes as a user would: an outline field, a template (old -> new
hash, needs ``allow_prompt_change``), a hand edit, a pre-state an upstream task will
rewrite, a task never built or forgotten by ``rerun-from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.builddb import SceneDB
from pipeline.core.errors import UserError
from targets.book.uptodate import InputsUnchanged
from targets.command import BookCommand, close_matches

_PRE_STATES = ("post_state.json", "state.json")
SHOWN = 12  # causes printed per task; a group of a big book has one per stale scene


@dataclass
class Verdict:
    """Whether a task would run, and why: its own causes make it run; upstream causes alone
    (a task it reads from runs first) make it run only if that task writes different files
    (a same request is served from the response cache, so the files are often the same)."""

    task: str
    runs: bool = False
    own: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return self.own + self.upstream

    # it runs only to remake missing files from unchanged inputs: the same request, so
    # (through the response cache) the same files
    regenerates: bool = False

    @property
    def maybe(self) -> bool:
        """It runs only if an upstream task writes different files."""
        return not self.runs and bool(self.upstream)

    @property
    def active(self) -> bool:
        """It runs, or may run."""
        return self.runs or bool(self.upstream)


def _short(digest: str | None) -> str:
    return digest[:8] if digest else "missing"


class Explainer:
    """Causes of staleness for the tasks of one loaded project, memoised per task."""

    def __init__(self, task_list, dep_manager, db: SceneDB, templates: set[str],
                 side: str | None = None):
        self.side = side  # a try's name: it builds with any template (doit try)
        self.tasks = {t.name: t for t in task_list}
        self.dep_manager = dep_manager
        self.db = db
        self.templates = templates
        self.producer = {target: t.name for t in task_list for target in t.targets}
        self._memo: dict[str, Verdict] = {}
        self._regenerating: set[str] = set()

    # -- one task's own causes --------------------------------------------------------
    def _own(self, name: str) -> list[str]:
        task, db = self.tasks[name], self.db
        if not task.actions:
            return []
        if any(isinstance(u, bool) and u is False for u, _, _ in task.uptodate):
            return ["runs every time (a check before the build, not a build step)"]
        if not db.in_(name):
            failure = db.failure(name)
            if failure:
                return [f"failed last time: {failure['error'].splitlines()[0]}"]
            attempt = db.attempt(name)
            if attempt:
                return [f"forgotten by rerun-from (attempt {attempt}: asked afresh, not "
                        "served from the response cache)"]
            if task.targets and all(_exists(t) for t in task.targets):
                return ["forgotten (rerun-from, reset or forget): its files are on disk but "
                        "the build DB has no record of them"]
            return ["never built"]
        status = self.dep_manager.get_status(task, self.tasks, get_log=True)
        out = self._hand_edits(name, task.targets)
        if status.status == "up-to-date":
            return out
        reasons = status.reasons
        if not out and {k for k, v in reasons.items() if v} <= {"missing_target"}:
            self._regenerating.add(name)
        upstream = False
        for rule, _args, _kwargs in reasons.get("uptodate_false", []):
            out += rule.reasons if isinstance(rule, InputsUnchanged) else [f"{rule} is false"]
        for path in reasons.get("changed_file_dep", []):
            out.append(self._changed(name, path))
        for path in reasons.get("missing_file_dep", []):
            maker = self.producer.get(path)
            if maker and maker != name and self.verdict(maker).runs:
                upstream = True
                continue  # its maker runs first: an upstream cause (see ``verdict``)
            out.append(f"{path} is missing" + (f" ({maker} makes it)" if maker else ""))
        for path in reasons.get("missing_target", []):
            out.append(f"{path} is missing: the task reruns (an LLM answer comes from the "
                       "response cache when the request is the same)")
        for path in reasons.get("added_file_dep", []):
            if path in self.templates:
                out.append(f"template {path} is used now (a new override or another path), "
                           + self._needs(path))
            else:
                out.append(f"it reads a new input: {path}")
        for path in reasons.get("removed_file_dep", []):
            out.append(f"it no longer reads {path}")
        if reasons.get("checker_changed"):
            out.append("the file checker changed (every task is checked afresh)")
        return out or ([] if upstream else ["doit's record of it is incomplete"])

    def _changed(self, name: str, path: str) -> str:
        from pipeline.core.hashing import hash_file

        if path in self.templates:
            old = (self.db.get(name, path) or [None, None, None])[2]
            try:
                new = hash_file(path)
            except OSError:
                new = None
            return (f"template {path} changed ({_short(old)} -> {_short(new)}), "
                    + self._needs(path, new))
        edits = self._hand_edits(name, [path])
        if edits:
            return edits[0]
        maker = self.producer.get(path)
        if maker and path.rpartition("/")[2] in _PRE_STATES:
            return f"pre-state changed: {maker} wrote a new {path.rpartition('/')[2]}"
        if maker:
            return f"{path} changed: {maker} wrote a new version"
        return f"{path} changed"

    def _needs(self, path: str, digest: str | None = None) -> str:
        """What a changed template needs: ``allow_prompt_change``, unless a try that
        brought it in was accepted (``doit accept``)."""
        import json

        from pipeline.book.runvars import ACCEPTED_SETTING
        from pipeline.core.hashing import hash_file

        if self.side:
            return f"try {self.side} builds with it"
        raw = self.db.setting(ACCEPTED_SETTING)
        if raw:
            try:
                if digest is None:
                    digest = hash_file(path)
                accepted = json.loads(raw)
                if [path, digest] in accepted["templates"]:
                    return (f"accepted with doit accept {accepted['try']} "
                            f"({accepted['reason']}): the next doit rebuilds with it")
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return 'needs allow_prompt_change=1 reason="..."'

    def _hand_edits(self, name: str, paths: list[str]) -> list[str]:
        from pipeline.book.rules import find_edits

        out = []
        for edit in find_edits(self.db, list(paths)):
            out.append(f"{edit.path} edited by hand (written by {edit.task_id}): the run stops "
                       f"until force_resume=1 builds on it or rerun-from {edit.task_id} "
                       "regenerates it")
        return out

    # -- transitively ----------------------------------------------------------------
    def verdict(self, name: str) -> Verdict:
        """Would ``name`` run, and why (memoised; upstream first)."""
        if name in self._memo:
            return self._memo[name]
        task = self.tasks[name]
        verdict = self._memo[name] = Verdict(name)
        if not task.actions:  # a group: it runs when one of its tasks does
            subs = [self.verdict(s) for s in task.task_dep if s in self.tasks]
            verdict.own = [f"{v.task}: {v.reasons[0]}" for v in subs if v.runs]
            verdict.upstream = [f"{v.task}: {v.reasons[0]}" for v in subs if v.maybe]
            verdict.runs = bool(verdict.own)
            return verdict
        verdict.own = self._own(name)
        if not self.db.in_(name):  # never built, forgotten or failed: that says it all
            verdict.runs = bool(verdict.own)
            return verdict
        seen = set()
        definite = False  # an upstream task will write new content (its inputs changed)
        for path in sorted(task.file_dep):
            maker = self.producer.get(path)
            if maker is None or maker == name or maker in seen:
                continue
            seen.add(maker)
            up = self.verdict(maker)
            if not up.active or any(maker in reason for reason in verdict.own):
                continue  # up to date, or already named (a hand edit of what it wrote)
            cause = self.root_cause(maker)
            fresh = up.runs and not up.regenerates
            definite |= fresh
            file = path.rpartition("/")[2]
            if not fresh:
                verdict.upstream.append(
                    f"{path} only if {maker} writes it differently ({cause}; it "
                    f"{'runs' if up.runs else 'may run'} with the same inputs, so the same "
                    "request: the response cache usually gives the same file)")
            elif file in _PRE_STATES:
                verdict.upstream.append(f"pre-state may change: {maker} will produce a new "
                                        f"{file} (because {cause})")
            else:
                verdict.upstream.append(f"{path} may change: {maker} will run "
                                        f"(because {cause})")
        verdict.runs = bool(verdict.own) or definite
        verdict.regenerates = (bool(verdict.own) and not definite
                               and name in self._regenerating)
        return verdict

    def root_cause(self, name: str) -> str:
        """The first own cause found walking upstream from ``name``."""
        verdict = self.verdict(name)
        if verdict.own:
            return f"{name}: {verdict.own[0]}"
        for path in sorted(self.tasks[name].file_dep):  # doit's is a set: the same answer
            maker = self.producer.get(path)          # every time, whatever the hash seed
            if maker and maker != name and self.verdict(maker).active:
                return self.root_cause(maker)
        return f"{name} would run"


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


def report(verdict: Verdict) -> str:
    """The text ``doit why`` prints for one task."""
    if not verdict.active:
        return f"{verdict.task} is up to date\n"
    reasons = verdict.reasons
    head = (f"{verdict.task} would run:" if verdict.runs else
            f"{verdict.task} runs only if a task it reads from writes different files (an "
            "identical answer, e.g. from the response cache, leaves it up to date):")
    lines = [head] + [f"  - {r}" for r in reasons[:SHOWN]]
    if len(reasons) > SHOWN:
        lines.append(f"  ... and {len(reasons) - SHOWN} more (doit why on one of the tasks "
                     "above says more)")
    return "\n".join(lines) + "\n"


class Why(BookCommand):
    """``doit why TASK``: why a task would run, in the user's terms."""

    name = "why"
    doc_purpose = "say why a task would run, in the user's terms (through its upstream too)"
    doc_usage = "TASK [TASK ...]"
    doc_description = ("Names the cause: an outline.json or book.json field, a template (old -> "
                       "new hash), a hand edit, a pre-state an upstream task will rewrite, a "
                       "task never built or forgotten by rerun-from. Exit 0 (up to date or "
                       "not), 3 for an unknown task.")

    def run(self, db, args) -> int:
        from targets.book.run import of_command

        if not args:
            raise UserError("doit why needs a task", fix="e.g. doit why write:ch001_sc001")
        book = of_command(self).book
        explainer = Explainer(self.task_list, self.dep_manager, db,
                              set(book.templates.values()))
        for name in args:
            if name not in explainer.tasks:
                raise UserError(f"doit why: no task '{name}'"
                                + close_matches(name, sorted(explainer.tasks)),
                                fix="doit list shows the tasks")
        for name in args:
            self.outstream.write(report(explainer.verdict(name)))
        return 0


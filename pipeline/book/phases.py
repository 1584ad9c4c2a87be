"""The book pipeline's phases: where each reads and writes, its prompt, its pure logic.

Eight phases per scene, declared in ``phase_table``: plan -> preflight -> continuity_pack
-> write -> repair -> state_repair -> lint -> commit. LLM phases are described by a prompt
context and an output schema; preflight, lint and commit are plain code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from pipeline.book.context import KEEP_FACTS, SceneView, scene_view
from pipeline.book.models import (
    ContinuityPack,
    Finding,
    LintReport,
    LintSettings,
    OutlineScene,
    PreflightReport,
    SceneCard,
    State,
    StatePatch,
    normal_text,
    output_schema,
)
from pipeline.book.phase_table import PHASE, TABLE
from pipeline.book.workspace import Book
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_json
from pipeline.core.store import dump_json


@dataclass
class PhaseFiles:
    """Where one phase of one scene reads and writes (paths relative to the project)."""

    inputs: dict[str, str]
    outputs: dict[str, str]
    state_input: str | None = None  # the name in ``inputs`` holding the pre-state
    templates: dict[str, str] = field(default_factory=dict)  # role -> path


def layout(book: Book, sid: str) -> dict[str, PhaseFiles]:
    """Every phase's inputs and outputs for scene ``sid`` (string paths, cheap to build),
    in pipeline order, as the phase table declares them."""
    draft = book.draft.as_posix()
    base = f"{draft}/scenes/{sid}/"
    prev = book.previous(sid)
    files: dict[str, PhaseFiles] = {}
    for spec in TABLE:
        inputs = {}
        for i in spec.inputs:
            if not i.previous_scene:  # made above in the table: its path is known
                inputs[i.name] = files[i.phase].outputs[i.made_as]
            elif prev:
                made = PHASE[i.phase].files[i.made_as]
                inputs[i.name] = f"{draft}/scenes/{prev.id}/{i.phase}/{made}"
            else:  # the first scene starts from the book's initial state
                inputs[i.name] = book.state_path.as_posix()
        folder = base + spec.name + "/"
        files[spec.name] = PhaseFiles(
            inputs, {name: folder + file for name, file in spec.files.items()}, spec.state_input,
            {role: book.templates[name] for role, name in spec.template_roles.items()})
    return files


def check_templates(book: Book, phases: list[str]) -> None:
    """Every template the LLM ``phases`` render parses and reads only what its context
    has (``rendering.check_names``): a UserError naming the first that does not."""
    from pipeline.core.rendering import check_names

    system = book.templates["system"]
    for phase in phases:
        names = context_names(phase)
        check_names(book.templates[phase], names, f"the {phase} phase's prompt")
        check_names(system, names, f"the system prompt of the {phase} phase")


def inputs_hash(book: Book, scene: OutlineScene, phase: str) -> str:
    """Hash of the non-file inputs a phase reads (its slice of outline and config).

    Used as an up-to-date check, so editing one scene's brief replans only that scene.
    """
    cfg = book.config
    if phase == "plan":
        prev = book.previous(scene.id)
        data: Any = [scene.model_dump(), prev.model_dump() if prev else None,
                     cfg.title, cfg.premise, cfg.style.model_dump(), cfg.model.model_dump(),
                     _chapter(book, scene.id).title]
    elif phase == "preflight":
        data = [scene.new_characters and [c.model_dump() for c in scene.new_characters],
                [loc.model_dump() for loc in scene.new_locations]]
    elif phase == "lint":  # its rules, and what its repair rounds send the model
        data = [cfg.lint.model_dump(), cfg.title, cfg.premise, cfg.style.model_dump(),
                cfg.model.model_dump()]
    elif PHASE[phase].llm:
        data = [cfg.title, cfg.premise, cfg.style.model_dump(), cfg.model.model_dump()]
    else:
        data = None
    return hash_json(data)


def _chapter(book: Book, sid: str):
    for chapter in book.outline.chapters:
        if sid.startswith(chapter.id + "_"):
            return chapter
    raise UserError(f"scene '{sid}' has no chapter")


# -- loading inputs ---------------------------------------------------------------------
def load_input(path: str, model: type[BaseModel] | None) -> Any:
    """Read an artifact that a phase consumes; a broken one is a UserError naming it."""
    from pathlib import Path

    from pipeline.core.jsonio import parse_model, read_json

    if model is None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("input artifact is missing", path=path,
                            fix="run the phase that makes it") from None
    return parse_model(model, read_json(Path(path), "artifact"), path)


INPUT_MODELS: dict[str, type[BaseModel] | None] = {
    "scene_card": SceneCard, "pre_state": State, "state": State, "pack": ContinuityPack,
    "prose": None, "state_patch": StatePatch, "lint_report": LintReport,
}


# -- LLM phases -------------------------------------------------------------------------
def _context_key(input_name: str) -> str:
    """The name an input has in a phase's prompt context."""
    return {"scene_card": "card", "state_patch": "patch"}.get(input_name, input_name)


def context_names(phase: str) -> set[str]:
    """The variables ``prompt_context`` gives a phase's templates, known without a scene
    (what the guard checks templates against before any call)."""
    names = {"book", "scene_id", "scene"} | ({"previous", "chapter"} if phase == "plan" else set())
    for i in PHASE[phase].inputs:
        names |= {"state", "last_scene"} if i.name in ("state", "pre_state") \
            else {_context_key(i.name)}
    return names


def prompt_context(book: Book, scene: OutlineScene, phase: str, inp: dict) -> dict:
    """Variables the phase's templates see.

    ``state`` is the scene's bounded view (``pipeline.book.context``), not the whole
    state, and ``last_scene`` the account of the scene before it.
    """
    cfg = book.config
    ctx: dict[str, Any] = {
        "book": {"title": cfg.title, "premise": cfg.premise, "style": cfg.style.model_dump()},
        "scene_id": scene.id,
        "scene": scene.model_dump(),
    }
    if phase == "plan":
        prev = book.previous(scene.id)
        ctx["previous"] = prev.model_dump() if prev else None
        ctx["chapter"] = {"title": _chapter(book, scene.id).title}
    for name, value in inp.items():
        if name in ("state", "pre_state"):
            view = _view(scene, inp)
            ctx["state"] = view.state.model_dump()
            ctx["last_scene"] = view.last_scene.model_dump() if view.last_scene else None
            continue
        ctx[_context_key(name)] = value.model_dump() if isinstance(value, BaseModel) else value
    return ctx


def _view(scene: OutlineScene, inp: dict) -> SceneView:
    state = inp["state"] if "state" in inp else inp["pre_state"]
    return scene_view(state, scene, inp.get("scene_card"))


def _patch_cast(scene: OutlineScene, inp: dict) -> list[str]:
    """Whom a state patch may change: the scene card's characters. ``state_repair`` does not
    read the card, so it corrects the changes of the patch it is given (all of them to
    card characters): offering the outline's characters let it change one the card had
    dropped, which lint then refused and the scene stopped."""
    if "scene_card" in inp:
        return list(inp["scene_card"].characters)
    if "state_patch" in inp:
        return [c.id for c in inp["state_patch"].characters]
    return list(scene.characters)


def _patch_choices(view: SceneView, scene_chars: list[str]) -> dict[str, list[str]]:
    choices = {"CharacterChange.location": view.places,
               "StatePatch.threads_closed": view.threads}
    if scene_chars:
        choices["CharacterChange.id"] = scene_chars
    else:
        choices["StatePatch.characters"] = []
    if view.items:
        choices["ItemMove.id"] = view.items
        choices["ItemMove.holder"] = view.cast + view.places
    else:
        choices["StatePatch.items"] = []
    return choices


def schema_for(phase: str, scene: OutlineScene, inp: dict,
               max_tokens: int | None = None, lint: LintSettings | None = None) -> dict:
    """The output JSON Schema for ``phase``, narrowed to the ids of the scene's bounded
    view (so its enums do not grow with the book either). With ``max_tokens``, the prose
    must leave room in the answer for the rest of it (see ``_fit_prose``); with ``lint``,
    it must be long enough for the book's ``lint.min_words``."""
    schema = _schema_for(phase, scene, inp)
    if "prose" in schema.get("properties", {}):
        _fit_prose(schema, max_tokens, lint)
    return schema


# Characters a word takes in prose, counting its space: what a word minimum asks of the
# prose's length (English averages under 6; 7 leaves a margin for short words).
CHARS_PER_WORD = 7


def prose_room(max_tokens: int) -> int:
    """The longest prose an answer of ``max_tokens`` may hold, in characters: about 4 a
    token, half of the answer (the state patch and the rest need the other half)."""
    return int(max_tokens * 4 * 0.5)


def _fit_prose(schema: dict, max_tokens: int | None, lint: LintSettings | None) -> None:
    # An answer cut at max_tokens is invalid JSON, paid for and re-asked; a small model
    # runs on until it is cut: constrained decoding ends the prose in time.
    prose = schema["properties"]["prose"]
    if max_tokens:
        prose["maxLength"] = prose_room(max_tokens)
    if lint is not None:
        # lint counts words; a grammar counts characters: ask for enough of them that the
        # words are there (the answer's check counts the words, see output_validator)
        want = max(prose.get("minLength", 0), lint.min_words * CHARS_PER_WORD)
        prose["minLength"] = min(want, prose.get("maxLength", want))


def _schema_for(phase: str, scene: OutlineScene, inp: dict) -> dict:
    if phase == "plan":
        schema = output_schema(SceneCard, {"SceneCard.pov": scene.characters,
                                           "SceneCard.location": [scene.location]})
        # What the outline says is the outline's: the card's title and who is present are
        # written for the model by constrained decoding (consts). An enum list let a small
        # model repeat ids, which no grammar can forbid (uniqueItems is not a grammar rule).
        schema["properties"]["title"] = {"const": scene.title, "title": "Title"}
        schema["properties"]["characters"] = {"const": list(scene.characters),
                                              "title": "Characters"}
        return schema
    view = _view(scene, inp)
    card: SceneCard = inp["scene_card"] if "scene_card" in inp else None
    chars = _patch_cast(scene, inp)
    if phase == "continuity_pack":
        subjects = list(chars) + view.cast + [card.location] + view.items
        return output_schema(ContinuityPack, {"Fact.subject": subjects,
                                              "ContinuityPack.open_threads": view.threads})
    schema = output_schema(PHASE[phase].answer_model, _patch_choices(view, chars))
    _bound_patch(schema, view, chars)
    _forbid_existing_threads(schema, view)
    return schema


def _bound_patch(schema: dict, view: SceneView, chars: list[str]) -> None:
    # Counts the grammar can hold: a change per character of the scene, a move per item in
    # view, a close per thread in view (repeats are the answer's check's to refuse).
    props = schema["$defs"]["StatePatch"]["properties"]
    for name, n in (("characters", len(chars)), ("items", len(view.items)),
                    ("threads_closed", len(view.threads))):
        if "maxItems" in props[name]:
            props[name]["maxItems"] = min(props[name]["maxItems"], n)


def _forbid_existing_threads(schema: dict, view: SceneView) -> None:
    # Only the threads in view: the rest of the book's ids are checked in code
    # (output_validator), which re-asks the model, so the schema stays bounded.
    if view.threads:
        new_id = schema["$defs"]["NewThread"]["properties"]["id"]
        new_id["not"] = {"enum": sorted(view.threads)}


def known_thread(state: State, tid: str) -> bool:
    """Whether the book already has a thread ``tid``, open or archived."""
    arc = state.archive
    return tid in state.threads or tid in arc.threads or tid in arc.thread_ids


def output_validator(phase: str, inp: dict, rules: LintSettings | None = None,
                     max_tokens: int | None = None):
    """The check of a phase's answer past its schema, for what no grammar can hold: the
    pydantic model, beats that repeat (as lint compares them), and the findings lint would
    make on the answer's prose (``rules``: word counts a ``max_tokens`` answer can reach,
    forbidden markers) and state patch (a thread id the book already has or one opened
    twice, a character changed twice). A failure is a ValueError naming the field, so the
    model is re-asked with it."""
    model = PHASE[phase].answer_model
    state: State | None = inp.get("state")

    def validate(value: Any) -> BaseModel:
        data = model.model_validate(value)
        found: list[Finding] = []
        if isinstance(data, SceneCard):
            found += beat_findings(data)
        prose = getattr(data, "prose", None)
        if prose is not None and rules is not None:
            found += [f for f in prose_findings(rules, prose)[1]
                      if f.rule != "min_words" or words_reachable(rules, max_tokens)]
        patch = getattr(data, "state_patch", None)
        if patch is not None and state is not None:
            found += patch_findings(state, patch)
        errors = [f for f in found if f.severity == "error"]
        if errors:
            raise ValueError("; ".join(f"$.{f.field}: {f.message}" for f in errors))
        return data

    return validate


def words_reachable(rules: LintSettings, max_tokens: int | None) -> bool:
    """Whether an answer of ``max_tokens`` can hold ``lint.min_words`` words at all (two
    characters a word at the least): if not, asking again cannot help; lint says which
    setting to change."""
    return max_tokens is None or rules.min_words * 2 <= prose_room(max_tokens)


def patch_schema(scene: OutlineScene, inp: dict) -> dict:
    """The JSON Schema a scene's state patch must satisfy against its current pre-state."""
    view = _view(scene, inp)
    schema = output_schema(StatePatch, _patch_choices(view, _patch_cast(scene, inp)))
    _forbid_existing_threads(schema, view)
    return schema


def stale_output_error(phase: str, scene: OutlineScene, inp: dict,
                       outputs: dict[str, str]) -> str | None:
    """Why a phase's existing result no longer fits its new pre-state (None if it does).

    ``force_resume`` keeps a stale result only when it still names ids that exist.
    """

    from jsonschema import Draft202012Validator

    from pipeline.core.jsonio import load_json

    if phase == "continuity_pack":
        schema, path = _schema_for(phase, scene, inp), outputs["pack"]
    elif "state_patch" in outputs:
        schema, path = patch_schema(scene, inp), outputs["state_patch"]
    else:
        return None
    try:
        data = load_json(path)
    except (OSError, ValueError) as exc:
        return f"{path}: {exc}"
    err = next(iter(Draft202012Validator(schema).iter_errors(data)), None)
    return f"{path}: {err.message}" if err else None


def split_output(phase: str, data: BaseModel) -> dict[str, bytes]:
    """The artifacts an LLM phase writes from its validated answer (besides prompt/response):
    an output named like a field of the answer is that field, the other one the whole answer
    (the phase table's rule); ``.md`` files hold the text, the others its JSON."""
    fields = type(data).model_fields
    out = {}
    for name, file in PHASE[phase].files.items():
        if name in ("prompt", "response"):
            continue
        value = getattr(data, name) if name in fields else data
        out[name] = ((value.strip() + "\n").encode() if file.endswith(".md")
                     else dump_json(value.model_dump()).encode())
    return out


# -- deterministic phases ---------------------------------------------------------------
def preflight(book: Book, scene: OutlineScene, card: SceneCard, pre_state: State,
              pre_state_path: str) -> dict[str, bytes]:
    """Register what the scene introduces and check the card against the pre-state."""
    data = pre_state.model_dump()
    added_c, added_l, checks = [], [], []
    for c in scene.new_characters:
        if c.id not in data["characters"]:
            data["characters"][c.id] = {"name": c.name, "description": c.description,
                                        "location": scene.location}
            added_c.append(c.id)
    for loc in scene.new_locations:
        if loc.id not in data["locations"]:
            data["locations"][loc.id] = {"name": loc.name, "description": loc.description}
            added_l.append(loc.id)
    state = State.model_validate(data)
    for cid in card.characters:
        if cid not in state.characters:
            raise UserError(f"scene card names unknown character '{cid}'",
                            path=f"{book.draft.as_posix()}/scenes/{scene.id}/plan/scene_card.json",
                            field="characters", fix="fix the card or introduce the character")
        checks.append(f"character {cid} known")
    if card.location not in state.locations:
        raise UserError(f"scene card names unknown location '{card.location}'",
                        path=f"{book.draft.as_posix()}/scenes/{scene.id}/plan/scene_card.json",
                        field="location", fix="fix the card or introduce the location")
    checks.append(f"location {card.location} known")
    patch = {"added_characters": {c: state.characters[c].model_dump() for c in added_c},
             "added_locations": {loc: state.locations[loc].model_dump() for loc in added_l}}
    report = PreflightReport(scene_id=scene.id, pre_state=pre_state_path,
                             added_characters=added_c, added_locations=added_l, checks=checks)
    return {"patch": dump_json(patch).encode(), "state": dump_json(state.model_dump()).encode(),
            "report": dump_json(report.model_dump()).encode()}


_WORD = re.compile(r"[\w'’-]+")


def prose_findings(rules: LintSettings, prose: str) -> tuple[int, list[Finding]]:
    """The word count of ``prose`` and lint's findings on it (length, forbidden markers):
    the write and repair answers are checked with these before they are kept."""
    findings: list[Finding] = []
    words = len(_WORD.findall(prose))
    if words < rules.min_words:
        findings.append(Finding(rule="min_words", severity="error", field="prose",
                                message=f"{words} words, fewer than {rules.min_words}"))
    if words > rules.max_words:
        findings.append(Finding(rule="max_words", severity="error", field="prose",
                                message=f"{words} words, more than {rules.max_words}"))
    for marker in rules.forbidden:
        if marker and marker in prose:
            findings.append(Finding(rule="forbidden", severity="error", field="prose",
                                    message=f"prose contains {marker!r}"))
    return words, findings


def patch_findings(state: State, patch: StatePatch) -> list[Finding]:
    """Lint's findings on a state patch against the scene's pre-state: threads opened that
    exist (or twice), threads closed that are not open, characters unknown or changed twice.
    The answers that carry a patch are checked with these before they are kept."""
    findings: list[Finding] = []
    opened: set[str] = set()
    for i, t in enumerate(patch.threads_opened):
        where = f"state_patch.threads_opened[{i}].id"
        if known_thread(state, t.id):
            findings.append(Finding(rule="thread_exists", severity="error", field=where,
                                    message=f"the book already has a thread '{t.id}' (open "
                                            "or closed); choose a new id"))
        elif t.id in opened:
            findings.append(Finding(rule="thread_exists", severity="error", field=where,
                                    message=f"thread '{t.id}' is opened twice"))
        opened.add(t.id)
    for i, t in enumerate(patch.threads_closed):
        if t not in state.threads or state.threads[t].status != "open":
            findings.append(Finding(rule="thread_not_open", severity="error",
                                    field=f"state_patch.threads_closed[{i}]",
                                    message=f"closes thread '{t}' that is not open"))
    changed: set[str] = set()
    for i, c in enumerate(patch.characters):
        where = f"state_patch.characters[{i}].id"
        if c.id not in state.characters:
            findings.append(Finding(rule="unknown_character", severity="error", field=where,
                                    message=f"patch changes unknown character '{c.id}'"))
        elif c.id in changed:
            findings.append(Finding(rule="character_repeated", severity="error", field=where,
                                    message=f"'{c.id}' is changed twice (one entry per "
                                            "character)"))
        changed.add(c.id)
    return findings


# What lint's repair rounds can fix: findings on the prose or the patch. A finding on the
# scene card (a beat, a character) is the plan's: repairing the prose cannot change it.
REPAIRABLE_FIELDS = ("prose", "state_patch")


def repairable(finding: Finding) -> bool:
    """Whether a lint finding is on the prose or the patch (a repair round may fix it)."""
    return (finding.field or "prose").split(".")[0].split("[")[0] in REPAIRABLE_FIELDS


def findings_message(findings: list[Finding]) -> dict:
    """The last message of a lint round's prompt: what lint found in the draft it carries."""
    lines = "\n".join(f"- {f.field or 'prose'}: {f.message}" for f in findings)
    return {"role": "user", "content": "A check of this draft found these problems; fix every "
                                       f"one and answer with the whole JSON again:\n{lines}"}


def lint(book: Book, sid: str, card: SceneCard, state: State, prose: str,
         patch: StatePatch) -> LintReport:
    """Deterministic checks of the final prose and patch; errors fail the phase."""
    words, findings = prose_findings(book.config.lint, prose)
    findings += patch_findings(state, patch)
    for cid in card.characters:
        ch = state.characters.get(cid)
        if ch and ch.name.split()[0] not in prose:
            findings.append(Finding(rule="character_absent", severity="warning",
                                    message=f"{ch.name} is in the scene card but not named",
                                    field="prose"))
    findings += _card_findings(book.scene(sid), card, patch, prose, state)
    passed = not any(f.severity == "error" for f in findings)
    return LintReport(scene_id=sid, passed=passed, word_count=words, findings=findings)


def beat_findings(card: SceneCard) -> list[Finding]:
    """Empty beats, and beats that repeat one before them (case and spacing aside): lint's
    findings on a card, and the plan's answer's check (no grammar compares two items)."""
    out: list[Finding] = []
    seen: dict[str, int] = {}
    for i, beat in enumerate(card.beats):
        key = normal_text(beat)
        if not key:
            out.append(Finding(rule="beat_empty", severity="error", field=f"beats[{i}]",
                               message=f"beat {i + 1} of the scene card is empty"))
        elif key in seen:
            out.append(Finding(rule="beat_repeated", severity="error", field=f"beats[{i}]",
                               message=f"beat {i + 1} repeats beat {seen[key] + 1}"))
        seen.setdefault(key, i)
    return out


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 4}


def _card_findings(scene: OutlineScene, card: SceneCard, patch: StatePatch, prose: str,
                   state: State) -> list[Finding]:
    """What a real (small) model gets wrong that the schemas cannot see: empty or repeated
    beats, characters that are not in the scene, prose that ignores its card."""
    out = [f.model_copy(update={"field": f"scene_card.{f.field}",
                                 "message": f"{scene.id}: {f.message}"})
           for f in beat_findings(card)]
    for i, cid in enumerate(card.characters):
        if cid not in scene.characters:
            out.append(Finding(rule="character_not_in_scene", severity="error",
                               field=f"scene_card.characters[{i}]",
                               message=f"{scene.id}: the card names '{cid}', who is not in the "
                                       "outline's scene"))
    for i, change in enumerate(patch.characters):
        if change.id not in card.characters:
            out.append(Finding(rule="character_not_in_scene", severity="error",
                               field=f"state_patch.characters[{i}].id",
                               message=f"{scene.id}: the patch changes '{change.id}', who is not "
                                       "in the scene card"))
    named = [c for c in card.characters
             if c in state.characters and state.characters[c].name.split()[0] in prose]
    card_words = _content_words(" ".join([card.goal, card.conflict, card.outcome, *card.beats]))
    shared = card_words & _content_words(prose)
    if not named and len(shared) < max(1, len(card_words) // 10):
        out.append(Finding(rule="prose_ignores_card", severity="warning", field="prose",
                           message=f"{scene.id}: the prose names none of the card's characters "
                                   f"and shares {len(shared)} of its {len(card_words)} words"))
    return out


def apply_patch(state: State, patch: StatePatch, sid: str) -> State:
    """The post-state: the pre-state with the scene's patch applied.

    The threads this scene closes and each character's facts beyond the latest
    ``KEEP_FACTS`` move to its ``archive`` (kept on disk in this post-state and its
    registries, not sent to the model), replacing the scene before's, and ``last_scene``
    becomes this scene's account: the state a scene reads stays bounded.
    """
    data = state.model_dump()
    touched: set[str] = set()
    for c in patch.characters:
        ch = data["characters"][c.id]
        touched.add(c.id)
        if c.location:
            ch["location"] = c.location
            touched.add(c.location)
        if c.condition:
            ch["condition"] = c.condition
        for fact in c.learned:
            if fact not in ch["knows"]:
                ch["knows"].append(fact)
    for move in patch.items:
        data["items"][move.id]["holder"] = move.holder
    for t in patch.threads_opened:
        data["threads"][t.id] = {"summary": t.summary, "status": "open", "opened_in": sid,
                                 "closed_in": None, "involves": sorted(touched)}
    for t in patch.threads_closed:
        data["threads"][t]["status"] = "closed"
        data["threads"][t]["closed_in"] = sid
    before = data["archive"]
    # the scene before's archive is on disk in its own post-state; only the ids go on
    ids = list(dict.fromkeys([*before["thread_ids"], *before["threads"]]))
    archive: dict = {"threads": {}, "knows": {}, "thread_ids": ids}
    for tid in [t for t, th in data["threads"].items() if th["status"] != "open"]:
        # ``involves`` only serves to put an open thread in a scene's view
        archive["threads"][tid] = {**data["threads"].pop(tid), "involves": []}
        ids.append(tid)
    for cid, ch in data["characters"].items():
        if len(ch["knows"]) > KEEP_FACTS:
            archive["knows"][cid] = ch["knows"][:-KEEP_FACTS]
            ch["knows"] = ch["knows"][-KEEP_FACTS:]
    data["archive"] = archive
    data["last_scene"] = {"id": sid, "events": list(patch.events),
                          "threads_opened": [t.id for t in patch.threads_opened],
                          "threads_closed": list(patch.threads_closed)}
    return State.model_validate(data)


def registries(post: dict) -> dict[str, dict]:
    """The registries of a post-state (as dumped): the world as the scene leaves it, plus
    what the scene archived (the threads it closed, with status ``closed``; a character's
    facts in order, the archived ones first). Over a book's scenes, every thread and every
    fact appears: the archive is never lost, and no registry grows with the book."""
    archive = post.get("archive") or {}
    chars = {}
    for cid, ch in post["characters"].items():
        older = archive.get("knows", {}).get(cid, [])
        chars[cid] = {**ch, "knows": older + ch["knows"]} if older else ch
    threads = {**archive.get("threads", {}), **post["threads"]}
    return {"characters": chars, "locations": post["locations"], "items": post["items"],
            "threads": threads}


def commit(state: State, patch: StatePatch, sid: str) -> dict[str, bytes]:
    """Apply the patch and snapshot the registries."""
    post = apply_patch(state, patch, sid).model_dump()
    out = {"post_state": dump_json(post).encode()}
    for reg, value in registries(post).items():
        out[reg] = dump_json(value).encode()
    return out


def response_artifact(request_hash: str, provider: str, model: str, text: str) -> bytes:
    """The raw answer as kept on disk (no volatile fields, so it is stable on a cache hit)."""
    return dump_json({"request_hash": request_hash, "provider": provider, "model": model,
                      "text": text}).encode()


def prompt_artifact(messages: list[dict], params: dict, schema: dict | None,
                    attempt: int) -> bytes:
    """The rendered prompt as kept on disk."""
    return dump_json({"messages": messages, "params": params, "attempt": attempt,
                      "output_schema": schema}).encode()



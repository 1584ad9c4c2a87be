"""A scene's request is bounded: a late scene of a long book sends what an early one does,
even when the model keeps opening threads, and nothing leaves the book on the way.

The states are made directly (preflight and commit, the real code, with synthetic cards
and patches), so no model runs; only the rendering of the requests is measured.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from support.project import REPO

from pipeline.book import phases
from pipeline.book.context import KEEP_FACTS, MAX_THREADS
from pipeline.book.models import ContinuityPack, SceneCard, State, StatePatch
from pipeline.book.workspace import Workspace, load_book
from pipeline.core.rendering import render_messages

STATE_LLM_PHASES = ("continuity_pack", "write", "repair", "state_repair")
PROSE = ("The lamp burned low while the tide turned under the rocks. " * 6).strip()


def _synth_module():
    spec = importlib.util.spec_from_file_location("synth_book", REPO / "bench" / "synth_book.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws") / "workspace"
    _synth_module().write_book(60, root / "books" / "synth")
    return load_book(Workspace(root), "synth")


def _card(scene) -> SceneCard:
    return SceneCard(title=scene.title, pov=scene.characters[0], location=scene.location,
                     characters=scene.characters, goal=scene.brief, conflict="The tide.",
                     outcome="They go on.", beats=["They meet.", "They argue.", "They part."])


def _patch(i: int, scene, state: State) -> StatePatch:
    """What a model that keeps opening threads writes: two new threads per scene, one
    closed every other scene (so the open ones pile up), two new facts per character."""
    closable = [t for t, th in state.threads.items() if th.opened_in is not None]
    a = scene.characters[0]
    name = state.characters[a].name.split()[0]
    return StatePatch.model_validate({
        "characters": [{"id": c, "learned": [f"fact {i}.{c}.1", f"fact {i}.{c}.2"]}
                       for c in scene.characters],
        "threads_opened": [{"id": f"t{i:03d}_a", "summary": f"{name} hides something {i}."},
                           {"id": f"t{i:03d}_b", "summary": f"A debt from scene {i}."}],
        "threads_closed": closable[:1] if i % 2 else [],
        "events": [f"{name} does thing {i}.", f"Something else happens in scene {i}."],
    })


@pytest.fixture(scope="module")
def chain(book):
    """Per scene index: (pre-state after preflight, card, patch, post-state)."""
    state, out = book.initial_state, []
    for i, scene in enumerate(book.scenes):
        card = _card(scene)
        pre = State.model_validate(json.loads(
            phases.preflight(book, scene, card, state, "pre.json")["state"]))
        patch = _patch(i, scene, pre)
        post = phases.apply_patch(pre, patch, scene.id)
        out.append((pre, card, patch, post))
        state = post
    return out


def _request_bytes(book, i: int, chain) -> int:
    """Bytes of all of scene i's requests that read the state: messages + output schema."""
    pre, card, patch, _ = chain[i]
    scene = book.scenes[i]
    pack = ContinuityPack(facts=[{"subject": card.location, "fact": "It is cold."},
                                 {"subject": card.pov, "fact": "She is tired."}])
    inp_all = {"scene_card": card, "pack": pack, "state": pre, "prose": PROSE,
               "state_patch": patch}
    total = 0
    for phase in STATE_LLM_PHASES:
        files = phases.layout(book, scene.id)[phase]
        inp = {k: inp_all[k] for k in files.inputs}
        ctx = phases.prompt_context(book, scene, phase, inp)
        messages = render_messages(book.templates["system"], book.templates[phase], ctx)
        schema = phases.schema_for(phase, scene, inp)
        total += len(json.dumps(messages)) + len(json.dumps(schema))
    return total


def test_late_scene_sends_what_an_early_one_does(book, chain):
    early, late = _request_bytes(book, 4, chain), _request_bytes(book, 59, chain)
    pre_late = chain[59][0]
    # the whole state did grow: the bound is the view's, not an empty book's
    assert len(pre_late.threads) > 40
    assert len(pre_late.model_dump_json()) > 4 * len(chain[4][0].model_dump_json())
    assert late <= 1.2 * early, (early, late)


def test_view_keeps_what_the_scene_needs(book, chain):
    pre, card, patch, _ = chain[59]
    scene = book.scenes[59]
    inp = {"scene_card": card, "state": pre}
    schema = phases.schema_for("continuity_pack", scene, inp)
    in_view = schema["properties"]["open_threads"]["items"]["enum"]
    assert len(in_view) <= MAX_THREADS
    # the threads the scene before opened are in view (and can be closed)
    assert {"t058_a", "t058_b"} <= set(in_view)
    patch_schema = phases.schema_for("write", scene, inp)
    closable = patch_schema["$defs"]["StatePatch"]["properties"]["threads_closed"]
    assert set(closable["items"]["enum"]) == set(in_view)
    ctx = phases.prompt_context(book, scene, "write", {"scene_card": card, "state": pre,
                                                      "pack": ContinuityPack(facts=[
                                                          {"subject": "x", "fact": "y."},
                                                          {"subject": "x", "fact": "z."}])})
    # the account of the scene before, from its committed patch
    assert ctx["last_scene"]["id"] == book.scenes[58].id
    assert ctx["last_scene"]["events"] == list(chain[58][2].events)
    assert set(ctx["state"]["characters"]) >= set(card.characters)
    for ch in ctx["state"]["characters"].values():
        assert len(ch["knows"]) <= KEEP_FACTS


def test_nothing_is_lost_to_the_archive(book, chain):
    """Every thread and every fact is in the registries of some scene: a closed thread in
    those of the scene that closed it, a fact pushed out in those of the scene that
    archived it; the state a scene reads carries only the scene before's archive."""
    post = chain[-1][3]
    opened = {t.id for _, _, patch, _ in chain for t in patch.threads_opened}
    closed = {t: book.scenes[i].id for i, (_, _, patch, _) in enumerate(chain)
              for t in patch.threads_closed}
    assert closed
    seen: dict[str, dict] = {}
    archived_facts: dict[str, list[str]] = {}
    for i, (pre, _, patch, after) in enumerate(chain):
        out = phases.commit(pre, patch, book.scenes[i].id)  # what commit writes
        assert json.loads(out["post_state"]) == after.model_dump()
        regs = {name: json.loads(out[name]) for name in ("threads", "characters")}
        assert regs == {k: v for k, v in phases.registries(after.model_dump()).items()
                        if k in regs}
        seen.update(regs["threads"])
        for cid, facts in after.archive.knows.items():
            archived_facts.setdefault(cid, []).extend(facts)
        # bounded: only this scene's closings, and every archived id so far
        assert set(after.archive.threads) == set(patch.threads_closed)
        assert set(closed) & set(after.archive.thread_ids) == {
            t for t, where in closed.items() if book.scenes.index(book.scene(where)) <= i}
    assert opened | {"missing_keeper"} == set(seen)
    for tid, where in closed.items():
        assert seen[tid]["status"] == "closed" and seen[tid]["closed_in"] == where
        assert tid not in post.threads  # not in the state a prompt is made from
    learned: dict[str, list[str]] = {}
    for _, _, patch, _ in chain:
        for c in patch.characters:
            learned.setdefault(c.id, []).extend(c.learned)
    for cid, facts in learned.items():
        # every fact, in order: archived ones, then the latest the state keeps
        assert archived_facts.get(cid, []) + post.characters[cid].knows == facts
        assert len(post.characters[cid].knows) <= KEEP_FACTS


def test_reused_thread_id_is_re_asked(chain):
    """The schema lists only the threads in view; an answer reusing the id of a thread
    closed long ago is refused by the validator (a ValueError: the client re-asks)."""
    pre = chain[59][0]
    archived = pre.archive.thread_ids[0]
    assert archived not in pre.threads and archived not in pre.archive.threads
    answer = {"prose": PROSE, "state_patch": {
        "threads_opened": [{"id": archived, "summary": "Again."}], "events": ["x"]}}
    validate = phases.output_validator("write", {"state": pre})
    with pytest.raises(ValueError, match=f"already has a thread '{archived}'"):
        validate(answer)
    answer["state_patch"]["threads_opened"][0]["id"] = "brand_new_thread"
    assert validate(answer).state_patch.threads_opened[0].id == "brand_new_thread"


def test_lint_refuses_an_archived_thread_id(book, chain):
    pre, card, _, _ = chain[59]
    archived = pre.archive.thread_ids[0]
    patch = StatePatch.model_validate({"threads_opened": [{"id": archived, "summary": "A."}],
                                       "events": ["x"]})
    report = phases.lint(book, book.scenes[59].id, card, pre, PROSE, patch)
    assert any(f.rule == "thread_exists" for f in report.findings)


def test_example_state_files_still_load(tmp_path: Path):
    """An old post-state (no archive, no last_scene) is still a valid pre-state."""
    old = json.loads((REPO / "workspace/books/example/state.json").read_text())
    state = State.model_validate(old)
    assert state.archive.threads == {} and state.last_scene is None


def test_call_log_counts_messages_and_schema(built):
    """The stand-in's tokens_in (what doit cost and the budget read) counts the output
    schema too: the model receives it with the messages."""
    from pipeline.llm.providers.offline import estimate_tokens

    calls = built.calls()
    assert len(calls) == 30 and all(c.get("try", 0) == 0 for c in calls)  # no re-asks
    for call in calls:
        prompt = json.loads(built.artifact(call["scene"], f"{call['phase']}/prompt.json")
                            .read_text())
        messages = "\n".join(m["content"] for m in prompt["messages"])
        schema = json.dumps(prompt["output_schema"])
        assert call["tokens_in"] == estimate_tokens(messages + "\n" + schema), call["task"]
        assert call["tokens_in"] > estimate_tokens(messages) + estimate_tokens(schema) // 2


def test_state_repair_changes_only_whom_the_patch_changes(book, chain):
    """state_repair does not read the card: it may change the characters of the patch it
    corrects (card characters), never an outline character the card dropped, which lint
    refuses (that stopped a synthetic build at ch010_sc002)."""
    pre, _, patch, _ = chain[20]
    scene = book.scenes[20]
    one = patch.model_copy(update={"characters": patch.characters[:1]})
    schema = phases.schema_for("state_repair", scene, {"state": pre, "prose": PROSE,
                                                       "state_patch": one})
    ids = schema["$defs"]["CharacterChange"]["properties"]["id"]["enum"]
    assert ids == [one.characters[0].id] and len(scene.characters) > 1
    empty = patch.model_copy(update={"characters": []})
    schema = phases.schema_for("state_repair", scene, {"state": pre, "prose": PROSE,
                                                       "state_patch": empty})
    assert schema["$defs"]["StatePatch"]["properties"]["characters"]["maxItems"] == 0

"""A scene's bounded context: the part of the state a phase sends to the model.

The whole state stays the source of truth (preflight, lint and commit read all of it);
what a prompt and its output schema carry is only what the scene needs, so a late scene
of a long book costs what an early one does:

- the cast: the characters of the scene card (and its point of view), plus those the
  card or the outline brief names, each with its look and its latest facts;
- the places: the scene's place and where the cast stands;
- the items at hand: held by the cast or lying at those places;
- the open threads that involve the cast or the place (named in the summary, or changed
  by the scene that opened them), newest first, or opened by the scene just before;
- a short account of the scene before (``State.last_scene``, written by commit).

Every list is capped, so neither the messages nor the enums of the schema grow with the
book, however many threads a model keeps opening. Closed threads and older facts are not
lost: commit moves them to the archive of the scene that closed or pushed them out (its
post-state and registries, on disk); the state carries only the ids of archived threads on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.book.models import OutlineScene, SceneAccount, SceneCard, State

KEEP_FACTS = 4  # facts a character keeps in the state; commit archives older ones
MAX_NAMED = 4  # characters named by the card or brief but not present
MAX_ITEMS = 6
MAX_THREADS = 6

_WORD = re.compile(r"[\w'’-]+")


@dataclass
class SceneView:
    """What one phase of one scene may see and name (ids, in a stable order)."""

    cast: list[str]
    places: list[str]
    items: list[str]
    threads: list[str]
    state: State  # the bounded state: same shape as the whole one, so templates keep working
    last_scene: SceneAccount | None


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _names(ident: str, name: str) -> set[str]:
    # A character is named by its id or its first name ("mara", "Mara Quell" -> "mara").
    first = name.split()[0].lower() if name.split() else ident
    return {ident.lower(), first}


def _mentions(words: set[str], ident: str, name: str) -> bool:
    return bool(_names(ident, name) & words)


def scene_view(state: State, scene: OutlineScene, card: SceneCard | None) -> SceneView:
    """The bounded view of ``state`` for ``scene`` (``card`` once the plan is made)."""
    present = list(card.characters) if card else list(scene.characters)
    if card and card.pov not in present:
        present.append(card.pov)
    place = card.location if card else scene.location
    text = scene.title + " " + scene.brief
    if card:
        text += " " + " ".join([card.title, card.goal, card.conflict, card.outcome, *card.beats])
    words = _words(text)
    named = [cid for cid, ch in state.characters.items()
             if cid not in present and _mentions(words, cid, ch.name)][:MAX_NAMED]
    cast = [c for c in present if c in state.characters] + named
    places = [place] + [loc for c in cast if (loc := state.characters[c].location)
                        and loc in state.locations]
    places = [p for p in dict.fromkeys(places) if p in state.locations]
    at_hand = set(cast) | set(places)
    items = [iid for iid, it in state.items.items() if it.holder in at_hand][:MAX_ITEMS]

    # Whose names a thread's summary may use, to tell which threads involve the scene.
    who = set()
    for c in cast:
        who |= _names(c, state.characters[c].name)
    for p in places:  # a place by its id or the last word of its name ("lighthouse")
        who |= {p.lower(), state.locations[p].name.split()[-1].lower()}
    last = state.last_scene
    involved, recent = [], []
    for tid, th in reversed(state.threads.items()):  # newest first
        if th.status != "open":
            continue
        if last is not None and th.opened_in == last.id:
            recent.append(tid)
        elif set(th.involves) & at_hand or who & _words(th.summary):
            involved.append(tid)
    threads = (recent + involved)[:MAX_THREADS]

    view = State(
        characters={c: _latest(state, c) for c in cast},
        locations={p: state.locations[p] for p in places},
        items={i: state.items[i] for i in items},
        threads={t: state.threads[t] for t in threads},
    )
    return SceneView(cast=cast, places=places, items=items, threads=threads, state=view,
                     last_scene=last)


def _latest(state: State, cid: str):
    ch = state.characters[cid]
    if len(ch.knows) <= KEEP_FACTS:
        return ch
    return ch.model_copy(update={"knows": ch.knows[-KEEP_FACTS:]})

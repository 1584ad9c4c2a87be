"""Write a synthetic scenemake book of N scenes, shaped like ``workspace/books/example``.

Usage::

    python bench/synth_book.py N OUTDIR [--per-chapter 10] [--override-system]

``OUTDIR`` becomes a book folder (``book.json``, ``outline.json``, ``state.json``).
Chapters hold ``--per-chapter`` scenes each; every scene has a title, a brief, a
location and two or three characters that exist in the state when the scene starts.
Every tenth chapter introduces one new character and one new location (like
``ch002_sc002`` of the example), so preflight has real work now and then while the
world stays small enough for the offline model's schemas.

``--override-system`` also writes ``templates/system.j2`` (a copy of the package
default): a book override shared by every LLM phase, for the hash-count benchmark.
The output is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SYSTEM = REPO / "pipeline" / "book" / "templates" / "system.j2"

CHARACTERS: dict[str, dict[str, Any]] = {
    "mara": {"name": "Mara Quell", "description": "A ferry mechanic back on the point.",
             "location": "ferry_landing", "condition": "tired", "knows": []},
    "ines": {"name": "Ines Harrow", "description": "The harbourmaster.",
             "location": "harbour_office", "condition": "watchful", "knows": []},
    "wren": {"name": "Wren Adair", "description": "A boy who runs errands for the light.",
             "location": "lighthouse", "condition": "frightened", "knows": []},
    "tobias": {"name": "Tobias Quell", "description": "The missing keeper.",
               "location": None, "condition": "missing", "knows": []},
    "oren": {"name": "Oren Salt", "description": "A net mender with a long memory.",
             "location": "net_sheds", "condition": "well", "knows": []},
    "lise": {"name": "Lise Marrow", "description": "The ferry's pilot.",
             "location": "ferry_landing", "condition": "well", "knows": []},
}
LOCATIONS: dict[str, dict[str, str]] = {
    "ferry_landing": {"name": "the ferry landing", "description": "A tarred jetty."},
    "harbour_office": {"name": "the harbour office", "description": "Tide tables on the walls."},
    "lighthouse": {"name": "the Gull Point lighthouse", "description": "A white tower."},
    "net_sheds": {"name": "the net sheds", "description": "Sagging sheds by the water."},
    "chapel": {"name": "the chapel", "description": "A stone chapel above the harbour."},
}
# Characters present in scenes; tobias stays missing, as in the example.
CAST = ["mara", "ines", "wren", "oren", "lise"]
VERBS = ["finds", "questions", "follows", "argues with", "shelters", "warns", "confides in"]
OBJECTS = ["a torn chart", "a lantern signal", "the brass key", "a wet logbook page",
           "a stranger's boat", "the tide tables", "a cold lamp"]


def book_config(title: str) -> dict[str, Any]:
    """The book.json of the synthetic book (offline model, example's lint and style)."""
    return {
        "title": title,
        "premise": "A keeper vanishes on a storm night; his niece takes up the lamp and "
                   "follows the torn pages of his logbook.",
        "style": {"person": "third", "tense": "past", "tone": "spare, salt-worn"},
        "model": {"provider": "offline", "model": "offline-1", "temperature": 0.7,
                  "max_tokens": 1200, "seed": 7},
        "lint": {"min_words": 60, "max_words": 3000},
    }


def initial_state() -> dict[str, Any]:
    """The state.json: the fixed cast, locations, two items and one open thread."""
    return {
        "characters": CHARACTERS,
        "locations": LOCATIONS,
        "items": {
            "logbook": {"name": "the keeper's logbook", "description": "Pages torn out.",
                        "holder": "lighthouse"},
            "brass_key": {"name": "a brass key", "description": "Stamped with a 9.",
                          "holder": "ines"},
        },
        "threads": {
            "missing_keeper": {"summary": "Tobias vanished on the night of the storm.",
                               "status": "open", "opened_in": None, "closed_in": None},
        },
    }


def scene(ch: int, sc: int, index: int, locations: list[str],
          new: tuple[dict[str, str], dict[str, str]] | None) -> dict[str, Any]:
    """One outline scene; ``new`` = (new character, new location) introduced here."""
    a = CAST[index % len(CAST)]
    b = CAST[(index + 1 + index // len(CAST)) % len(CAST)]
    if b == a:
        b = CAST[(index + 2) % len(CAST)]
    chars = [a, b]
    location = locations[index % len(locations)]
    out: dict[str, Any] = {"id": f"ch{ch:03d}_sc{sc:03d}", "title": f"Scene {index + 1}"}
    verb, obj = VERBS[index % len(VERBS)], OBJECTS[(index // 3) % len(OBJECTS)]
    if new is not None:
        new_char, new_loc = new
        chars.append(new_char["id"])
        location = new_loc["id"]
        out["new_characters"] = [new_char]
        out["new_locations"] = [new_loc]
    brief = (f"{CHARACTERS[a]['name']} {verb} {CHARACTERS[b]['name']} over {obj}. "
             f"Something said in scene {index + 1} changes what they plan to do next.")
    out.update(brief=brief, location=location, characters=chars)
    return out


def outline(n: int, per_chapter: int) -> dict[str, Any]:
    """The outline.json: ``n`` scenes in chapters of ``per_chapter``."""
    if n < 1 or per_chapter < 1:
        raise ValueError("need at least one scene and one scene per chapter")
    chapters: list[dict[str, Any]] = []
    locations = list(LOCATIONS)
    for index in range(n):
        ch, sc = index // per_chapter + 1, index % per_chapter + 1
        if ch > 999 or sc > 999:
            raise ValueError("scene ids are chNNN_scNNN: at most 999 chapters of 999 scenes")
        if sc == 1:
            chapters.append({"id": f"ch{ch:03d}", "title": f"Chapter {ch}", "scenes": []})
        new = None
        if sc == 2 and ch % 10 == 0:
            new = ({"id": f"stranger_{ch:03d}", "name": f"Stranger {ch}",
                    "description": "Someone off the boats."},
                   {"id": f"cove_{ch:03d}", "name": f"cove {ch}",
                    "description": "A shingle cove under the cliffs."})
        chapters[-1]["scenes"].append(scene(ch, sc, index, locations, new))
        if new is not None:
            locations.append(new[1]["id"])
    return {"chapters": chapters}


def write_book(n: int, outdir: Path, *, per_chapter: int = 10,
               override_system: bool = False) -> Path:
    """Write the book folder and return it."""
    outdir.mkdir(parents=True, exist_ok=True)

    def dump(name: str, data: Any) -> None:
        (outdir / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")

    dump("book.json", book_config(f"Synthetic book of {n} scenes"))
    dump("outline.json", outline(n, per_chapter))
    dump("state.json", initial_state())
    if override_system:
        (outdir / "templates").mkdir(exist_ok=True)
        shutil.copyfile(DEFAULT_SYSTEM, outdir / "templates" / "system.j2")
    return outdir


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, help="number of scenes")
    ap.add_argument("outdir", type=Path, help="book folder to write (workspace/books/NAME)")
    ap.add_argument("--per-chapter", type=int, default=10, help="scenes per chapter")
    ap.add_argument("--override-system", action="store_true",
                    help="also write templates/system.j2 (copy of the default)")
    args = ap.parse_args(argv)
    write_book(args.n, args.outdir, per_chapter=args.per_chapter,
               override_system=args.override_system)
    print(f"wrote {args.n} scenes to {args.outdir}")


if __name__ == "__main__":
    main()

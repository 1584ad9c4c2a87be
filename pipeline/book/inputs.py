"""A phase's non-file inputs, piece by piece, so a change can be named in the user's terms.

``phases.inputs_hash`` hashes a phase's slice of the outline and of ``book.json`` as one
value (the up-to-date check). This module names the same pieces one by one
("outline.json: scene ch001_sc001 `brief`", "book.json `style`") with a short hash each;
the up-to-date rule saves them beside the hash, and ``doit why`` compares them with the
pieces now to say which one changed. Keep the pieces here the ones ``inputs_hash`` reads.
"""

from __future__ import annotations

from typing import Any

from pipeline.book.workspace import LLM_PHASES, Book
from pipeline.core.hashing import hash_json

SHORT = 16  # hex digits kept per piece: enough to tell a change, small in the build DB


def _book_pieces(book: Book) -> dict[str, Any]:
    cfg = book.config
    return {"book.json `title`": cfg.title, "book.json `premise`": cfg.premise,
            "book.json `style`": cfg.style.model_dump(),
            "book.json `model` (or SCENEMAKE_MODEL)": cfg.model.model_dump()}


def pieces(book: Book, scene, phase: str) -> dict[str, Any]:
    """label -> value of every non-file input ``phase`` of ``scene`` reads."""
    out: dict[str, Any] = {}
    if phase == "plan":
        for key, value in scene.model_dump().items():
            out[f"outline.json: scene {scene.id} `{key}`"] = value
        prev = book.previous(scene.id)
        # the plan reads the scene before it too (for continuity of the outline)
        out[f"outline.json: scene {prev.id}, the one before {scene.id}" if prev
            else f"outline.json: no scene before {scene.id}"] = prev.model_dump() if prev else None
        out.update(_book_pieces(book))
        for chapter in book.outline.chapters:
            if scene.id.startswith(chapter.id + "_"):
                out[f"outline.json: chapter {chapter.id} `title`"] = chapter.title
    elif phase == "preflight":
        out[f"outline.json: scene {scene.id} `new_characters`"] = [
            c.model_dump() for c in scene.new_characters]
        out[f"outline.json: scene {scene.id} `new_locations`"] = [
            loc.model_dump() for loc in scene.new_locations]
    elif phase == "lint":
        out["book.json `lint`"] = book.config.lint.model_dump()
        out.update(_book_pieces(book))  # its repair rounds ask the model
    elif phase in LLM_PHASES:
        out.update(_book_pieces(book))
    return out


def fingerprint(book: Book, scene, phase: str) -> dict[str, str]:
    """label -> short hash of each piece (what the up-to-date rule saves)."""
    return {label: hash_json(value)[:SHORT] for label, value in pieces(book, scene, phase).items()}


def changes(saved: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """One sentence per piece that differs between a saved fingerprint and the current one."""
    if not saved:
        return ["outline.json or book.json changed (this phase's part of them; the build DB "
                "predates the record that would say which field)"]
    out = [f"{label} changed" for label, digest in now.items()
           if label in saved and saved[label] != digest]
    out += [f"{label} is new" for label in now if label not in saved]
    out += [f"{label} was removed" for label in saved if label not in now]
    return out or ["outline.json or book.json changed (this phase's part of them)"]

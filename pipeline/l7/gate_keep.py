"""Gate-Out's schema checks, scene by scene, with the results kept between runs.

Validating the whole output set against its JSON Schemas was 43% of an L7 run after one
scene of 100 was edited (0.79 s of jsonschema over 2.5 MB, bench/README.md section 6).
Every exported document but the Gate-In report is a head plus one array entry per scene
(per neighbouring pair for the continuity audit), and an entry's validity depends only on
the entry and its schema. So each scene (each pair) is a unit whose key is the blake3 of
its entries in every document, with the digests of the schemas that judge them; the keep
file remembers the keys of the units that passed, and the next run validates only the
units whose key moved, plus each document's head (the document with its per-scene array
still checked as an array: type, length).

What the report says never depends on the keep: a document whose head and entries all
pass is exactly a document with no schema violation, and as soon as anything fails, that
document is validated again as a whole, so the detail (the most relevant error, its JSON
path) is the one a from-scratch check gives. A keep file that is unreadable, of another
format or of another schema engine is ignored: every unit is validated.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from jsonschema import Draft202012Validator

from pipeline.core.hashing import hash_file, hash_json
from pipeline.core.jsonio import read_json_or_none

from .contracts import OUTPUT_FILES, first_error, schema_path, validator
from .files import write_if_changed

KEEP_FORMAT = "l7.gate_out_keep.v1"


def _scene_unit(entry: Any) -> str | None:
    sid = entry.get("scene_id") if isinstance(entry, dict) else None
    return f"scene:{sid}" if isinstance(sid, str) else None


def _pair_unit(entry: Any) -> str | None:
    pair = entry.get("pair") if isinstance(entry, dict) else None
    if isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair):
        return f"pair:{pair[0]}+{pair[1]}"
    return None


# output document -> (its array of per-unit entries, the unit an entry belongs to)
UNITS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "candidates_prompt.json": ("scenes", _scene_unit),
    "evaluation_report_prompt.json": ("scenes", _scene_unit),
    "selection_trace_prompt.json": ("scenes", _scene_unit),
    "continuity_audit_prompt.json": ("pairs", _pair_unit),
    "prompt_map_pack.json": ("scenes", _scene_unit),
    "scenes_v2.json": ("scenes", _scene_unit),
}


@functools.cache
def _split(name: str) -> tuple[Draft202012Validator, Draft202012Validator]:
    """(head validator, entry validator) of the schema of output document ``name``.

    The head schema is the document's with the array's ``items`` taken out; the entry
    validator is the root's evolved to ``items``, so its ``$ref``s resolve in the root.
    """
    array = UNITS[name][0]
    root = validator(OUTPUT_FILES[name])
    head = copy.deepcopy(root.schema)
    items = head["properties"][array].pop("items")
    return Draft202012Validator(head), root.evolve(schema=items)


@functools.cache
def _schema_digest(name: str) -> str:
    return hash_file(str(schema_path(OUTPUT_FILES[name])))


def _engine() -> str:
    """What a kept pass also depends on: this format and the validator's version."""
    return hash_json({"format": KEEP_FORMAT, "jsonschema": version("jsonschema"),
                      "schemas": {n: _schema_digest(n) for n in UNITS}})


@dataclass
class KeepStats:
    """What one Gate-Out did: the counts a user (and a test) can read in its task values."""

    keep: str = "used"  # used | none | unreadable | old format
    rechecked_scenes: list[str] = field(default_factory=list)
    rechecked_pairs: list[str] = field(default_factory=list)
    kept_scenes: int = 0
    kept_pairs: int = 0
    whole_documents: list[str] = field(default_factory=list)  # re-validated as a whole

    def as_values(self) -> dict:
        """JSON-safe form for the task's values."""
        return {"keep": self.keep, "rechecked_scenes": self.rechecked_scenes,
                "rechecked_pairs": self.rechecked_pairs, "kept_scenes": self.kept_scenes,
                "kept_pairs": self.kept_pairs, "whole_documents": self.whole_documents}


def _read_keep(path: str | os.PathLike, engine: str) -> tuple[dict[str, str], str]:
    if not os.path.lexists(path):
        return {}, "none"
    data = read_json_or_none(path)
    if data is None:
        return {}, "unreadable"
    if not isinstance(data, dict) or data.get("format") != KEEP_FORMAT \
            or data.get("engine") != engine:
        return {}, "old format"
    units = data.get("units")
    if not isinstance(units, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in units.items()):
        return {}, "unreadable"
    return units, "used"


def schema_errors(docs: dict[str, Any], keep_path: str | os.PathLike
                  ) -> tuple[dict[str, tuple[str, str] | None], KeepStats]:
    """``first_error`` of every document in ``docs``, validating only what changed.

    Returns (document name -> (JSON path, message) or None, what was re-validated), and
    rewrites the keep file with the units that pass now.
    """
    engine = _engine()
    kept, how = _read_keep(keep_path, engine)
    stats = KeepStats(keep=how)
    errors: dict[str, tuple[str, str] | None] = {}
    failed: set[str] = set()
    # unit -> [(document, entry)]; entries that name no unit are validated every time
    units: dict[str, list[tuple[str, Any]]] = {}
    for name, doc in docs.items():
        if name not in UNITS:
            errors[name] = first_error(doc, OUTPUT_FILES[name])
            continue
        head, _ = _split(name)
        if next(head.iter_errors(doc), None) is not None:
            failed.add(name)
            continue
        array, unit_of = UNITS[name]
        entries = doc.get(array) if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            unit = unit_of(entry)
            if unit is None:
                failed.add(name)  # it fails its schema anyway (no scene_id): the whole doc
            else:
                units.setdefault(unit, []).append((name, entry))
    passed: dict[str, str] = {}
    for unit, entries in units.items():
        # the key covers what the check reads: the entries and the schemas judging them
        key = hash_json([[n, _schema_digest(n), e] for n, e in entries])
        scene = unit.startswith("scene:")
        if kept.get(unit) == key:
            passed[unit] = key
            if scene:
                stats.kept_scenes += 1
            else:
                stats.kept_pairs += 1
            continue
        (stats.rechecked_scenes if scene else stats.rechecked_pairs).append(
            unit.partition(":")[2])
        bad = {n for n, e in entries if next(_split(n)[1].iter_errors(e), None) is not None}
        failed |= bad
        if not bad:
            passed[unit] = key
    for name in docs:
        if name in UNITS:
            # a failure is re-validated as a whole: the detail a from-scratch check gives
            errors[name] = first_error(docs[name], OUTPUT_FILES[name]) if name in failed \
                else None
    stats.whole_documents = sorted(failed)
    try:
        write_if_changed(keep_path, {"format": KEEP_FORMAT, "engine": engine,
                                     "units": dict(sorted(passed.items()))})
    except OSError:
        pass  # a cache: without it the next Gate-Out validates everything, as the first did
    return errors, stats

"""Example coder of the repair loop: applies a repair prompt's suggested rule changes.

    python3 workspace/scenarios/coders/rules_coder.py REPAIR_PROMPT [--only RULE ...]

Reads the ``json`` block at the end of the prompt (``{"suggested_changes": [{"file": ...,
"set": {rule: value}}]}``) and writes each value into its JSON file (paths relative to the
current folder), atomically. Prints what it changed; exit 0 (also when there was nothing to
change), 2 when the prompt cannot be read. A real coder (an agent CLI) gets the same prompt
and is judged the same way: by what changed in the files it is allowed to change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def suggested_changes(prompt_text: str) -> list[dict]:
    """The prompt's machine-readable ``suggested_changes`` ([] when there are none)."""
    parts = prompt_text.rsplit("```json", 1)
    if len(parts) != 2:
        return []
    try:
        data = json.loads(parts[1].split("```", 1)[0])
    except ValueError:
        return []
    changes = data.get("suggested_changes") if isinstance(data, dict) else None
    return changes if isinstance(changes, list) else []


def apply(changes: list[dict], only: set[str] | None = None) -> list[str]:
    """Write the changes; returns ``file: rule old -> new`` for each value that changed."""
    done = []
    for change in changes:
        path = Path(change["file"])
        data = json.loads(path.read_text(encoding="utf-8"))
        edited = False
        for rule, value in change["set"].items():
            if only and rule not in only:
                continue
            if data.get(rule) != value:
                done.append(f"{path}: {rule} {data.get(rule)!r} -> {value!r}")
                data[rule] = value
                edited = True
        if edited:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompt", type=Path)
    p.add_argument("--only", action="append", default=None, help="apply only this rule")
    args = p.parse_args(argv)
    try:
        text = args.prompt.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read {args.prompt}: {exc.strerror}", file=sys.stderr)
        return 2
    done = apply(suggested_changes(text), set(args.only) if args.only else None)
    for line in done:
        print(f"changed {line}")
    if not done:
        print("nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Work files: JSON written atomically, and only when its content changes.

An unchanged file keeps its mtime, so doit's blake3 checker never re-hashes it and the
tasks that read it stay up to date: this is what makes each stage content-addressed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file, remember
from pipeline.core.jsonio import display_path, loads
from pipeline.core.store import atomic_write_bytes, dump_json


def write_if_changed(path: str | os.PathLike, obj: Any) -> bool:
    """Write ``obj`` as artifact JSON unless the file already holds exactly that."""
    data = dump_json(obj).encode("utf-8")
    digest = hash_bytes(data)
    path = str(path)
    try:
        if hash_file(path) == digest:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)
    remember(path, os.stat(path), digest)
    return True


def load(path: str | os.PathLike) -> Any:
    """Read a work file another task wrote (missing or broken: a one-line error)."""
    try:
        return loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("work file is missing", path=display_path(path),
                        fix="run the runner again; the stage that writes it will rerun") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"work file is unreadable ({exc})", path=display_path(path),
                        fix="delete it; the stage that writes it will rerun") from None

"""Content-addressed LLM response cache: ``<root>/<hash[:2]>/<hash>.json``.

Each entry holds the request's canonical form and the response of the call that paid for
it. An entry that cannot be read or does not match its address is a miss, never a crash;
the next answer overwrites it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.core.hashing import hash_json
from pipeline.core.jsonio import load_json
from pipeline.core.store import atomic_write_bytes

_HASH_RE = re.compile(r"[0-9a-f]{8,128}")


@dataclass(frozen=True)
class CachedResponse:
    """A stored answer and what the original call cost."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    seed: int | None = None  # the seed sent with the try that answered (None: not known)
    # Every try of the exchange that paid for this answer (its seed, and the finding that
    # made the next try necessary), kept with an original request answered after re-asks:
    # served from the cache, the answer still says how it was reached.
    tries: tuple | None = None

    def to_json(self) -> dict:
        """Plain JSON form, as stored in the cache entry."""
        data = asdict(self)
        if self.tries is None:
            del data["tries"]  # entries of one try keep their old form
        else:
            data["tries"] = [dict(t) for t in self.tries]
        return data

    @classmethod
    def from_json(cls, obj: dict) -> CachedResponse:
        """Parse the stored form; raises ``ValueError`` if a field is missing or mistyped."""
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError("cache entry has no response text")
        try:
            return cls(
                text=obj["text"],
                tokens_in=int(obj["tokens_in"]),
                tokens_out=int(obj["tokens_out"]),
                cost_usd=float(obj["cost_usd"]),
                latency_ms=float(obj["latency_ms"]),
                seed=obj["seed"] if isinstance(obj.get("seed"), int) else None,
                tries=(tuple(t for t in obj["tries"] if isinstance(t, dict))
                       if isinstance(obj.get("tries"), list) else None),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad cache entry: {exc}") from exc


class ResponseCache:
    """The on-disk response cache under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, request_hash: str) -> Path:
        """Where the entry for ``request_hash`` lives."""
        if not _HASH_RE.fullmatch(request_hash):
            # The hash becomes a path; refuse anything that is not a hex digest.
            raise ValueError(f"not a request hash: {request_hash!r}")
        return self.root / request_hash[:2] / f"{request_hash}.json"

    def get(self, request_hash: str) -> CachedResponse | None:
        """The cached response, or None when absent, unreadable or not for this hash."""
        path = self.path_for(request_hash)
        try:
            entry = load_json(path)
            # A truncated, hand-edited or misplaced entry must not answer for this request.
            if not isinstance(entry, dict) or hash_json(entry.get("request")) != request_hash:
                return None
            return CachedResponse.from_json(entry.get("response"))
        except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None

    def put(self, request_hash: str, request: dict, response: CachedResponse) -> None:
        """Store ``response`` for the request whose canonical form is ``request``."""
        entry = {"request_hash": request_hash, "request": request,
                 "response": response.to_json()}
        # Compact JSON (json's C encoder) and no fsync: a cache entry is read by code, and
        # one lost to a power cut is a miss (``get`` checks every entry against its hash).
        atomic_write_bytes(self.path_for(request_hash),
                           json.dumps(entry, ensure_ascii=False).encode("utf-8"),
                           durable=False)

"""The ``doit NAME=value`` variables scenemake understands, validated.

doit accepts any ``name=value`` silently; a typo (``force_resme=1``) would disable a
rule without a word, so unknown names are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import UserError

KNOWN = {
    "book": "which book under workspace/books/ to build",
    "allow_prompt_change": "1 to accept changed templates (needs reason=...)",
    "reason": "why the prompt changed (recorded in the ledger)",
    "force_resume": "1 to accept manual edits and stale pre-states (recorded in the ledger)",
    "budget": "the most this run may spend on LLM calls, in USD (e.g. budget=5)",
    "wait": "1 to wait for another run of this book to finish instead of refusing to start",
}


# The build DB setting ``doit accept`` leaves for the next build (pipeline/book/tries.py):
# the templates it made the book's and the reason; a complete build clears it.
ACCEPTED_SETTING = "accepted_try"


@dataclass(frozen=True)
class RunVars:
    """The validated command-line variables of one doit run."""

    book: str | None = None
    allow_prompt_change: bool = False
    reason: str = ""
    force_resume: bool = False
    budget: float | None = None
    wait: bool = False
    # Not a variable: the templates ``doit accept`` made the book's, as (path, blake3), and
    # its reason (the build DB keeps them until a complete build used them).
    accepted: frozenset[tuple[str, str]] = frozenset()
    accepted_reason: str = ""


def _flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise UserError(f"{name}={value} is not a flag", fix=f"use {name}=1 or {name}=0")


def parse(raw: dict[str, str]) -> RunVars:
    """Validate doit's variables; an unknown name is an error listing the known ones."""
    for name in raw:
        if name not in KNOWN:
            raise UserError(f"unknown variable '{name}={raw[name]}'",
                            fix="known: " + ", ".join(sorted(KNOWN)))
    return RunVars(book=raw.get("book") or None,
                   allow_prompt_change=_flag("allow_prompt_change", raw.get("allow_prompt_change")),
                   reason=(raw.get("reason") or "").strip(),
                   force_resume=_flag("force_resume", raw.get("force_resume")),
                   budget=_money("budget", raw.get("budget")),
                   wait=_flag("wait", raw.get("wait")))


def _money(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        amount = float(value.lstrip("$"))
    except ValueError:
        amount = -1.0
    if amount < 0 or amount != amount:
        raise UserError(f"{name}={value} is not an amount in USD", fix=f"e.g. {name}=5")
    return amount

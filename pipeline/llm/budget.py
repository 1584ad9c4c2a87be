"""A spending cap for one run: no LLM call starts if it could take the run over it."""

from __future__ import annotations

import threading

from pipeline.core.errors import UserError


class BudgetExceeded(UserError):
    """The next call could exceed the run's budget; nothing was asked or lost."""


class Budget:
    """``max_cost_usd`` for this run (None: no cap). Thread-safe.

    Each call reserves its worst case (prompt tokens and ``max_tokens`` of output at the
    model's price) before it starts and settles the real cost after, so concurrent calls
    can never overshoot together.
    """

    def __init__(self, max_cost_usd: float | None = None):
        self.max_cost_usd = max_cost_usd
        self.spent = 0.0
        self.reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate: float, task: str) -> float:
        """Reserve ``estimate`` dollars or raise BudgetExceeded."""
        with self._lock:
            cap = self.max_cost_usd
            if cap is not None and self.spent + self.reserved + estimate > cap + 1e-12:
                raise BudgetExceeded(
                    f"budget: ${self.spent:.4f} of ${cap:.4f} spent in this run; the next call "
                    f"({task or '?'}, up to ${estimate:.4f}) could exceed it. Nothing was lost",
                    fix="run again to resume, or raise budget=... / max_cost_usd in book.json")
            self.reserved += estimate
            return estimate

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what the call really cost."""
        with self._lock:
            self.reserved -= reserved
            self.spent += actual

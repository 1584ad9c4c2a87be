"""Cost per call from a price table per model (USD per million tokens).

The table ships with the package (``prices.json``) and a book's config can add or
override entries. An unknown model costs 0, with one warning per model and run.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from pipeline.core.jsonio import load_json

_DEFAULTS = Path(__file__).with_name("prices.json")
_warned: set[str] = set()
_lock = threading.Lock()


def default_prices() -> dict[str, dict[str, float]]:
    """The shipped price table."""
    return load_json(_DEFAULTS)


class PriceTable:
    """``model -> {input_per_mtok, output_per_mtok}``; book entries win over the shipped ones."""

    def __init__(self, overrides: dict[str, dict[str, float]] | None = None):
        self.prices = {**default_prices(), **(overrides or {})}

    def known(self, model: str) -> bool:
        return model in self.prices

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """USD for one call; 0 (and a warning, once) for a model without a price."""
        price = self.prices.get(model)
        if price is None:
            with _lock:
                if model not in _warned:
                    _warned.add(model)
                    print(f"scenemake: warning: no price for model '{model}'; its calls count "
                          "as $0 (add it to \"prices\" in the config that names the model)",
                          file=sys.stderr)
            return 0.0
        return (tokens_in * price.get("input_per_mtok", 0.0)
                + tokens_out * price.get("output_per_mtok", 0.0)) / 1_000_000

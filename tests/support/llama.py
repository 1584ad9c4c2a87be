"""A real OpenAI-compatible server for tests: llama.cpp's Python server on a tiny model.

No model is downloaded: :func:`write_tiny_gguf` writes a random-weight llama-architecture
GGUF (about 0.5 MB) whose output layer is biased towards closing JSON punctuation and
short words, so that grammar-constrained decoding (``response_format`` ``json_object``
with a ``schema``) yields valid, reasonably short JSON.

Use in tests/conftest.py (pytest puts tests/ on sys.path)::

    from support.llama import llama_server, pytest_runtest_setup  # noqa: F401

and mark tests with ``@pytest.mark.llama``; they take the session-scoped ``llama_server``
fixture (a :class:`LlamaServer`: ``.base_url``, ``.port``, ``.model``, ``.model_id``).
Without llama-cpp-python (and gguf) they are skipped, or fail when
``SCENEMAKE_REQUIRE_LLAMA=1`` (CI).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.core.processes import stop_child
from support.parts import require

REQUIRE_ENV = "SCENEMAKE_REQUIRE_LLAMA"

# -- the model --------------------------------------------------------------------------
N_EMBD, N_HEAD, N_LAYER, N_FF, N_CTX = 64, 4, 2, 128, 2048
SPACE = "\u2581"  # SentencePiece's word-start marker
WORDS = ["the", "a", "and", "of", "to", "in", "she", "he", "her", "it", "was", "light",
         "sea", "door", "said", "night", "wind", "stairs", "lamp", "keeper", "salt", "rain",
         "stone", "glass", "tide", "dark", "cold", "slow", "room", "hand", "mara", "ines"]
PIECES = ["th", "he", "in", "an", "er", "on", "re", "ed", "ing", "the", "and", "ou", "st"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Output-layer bias, in logits (the random part has a spread of about 0.7). With a JSON
# grammar: inside a string the top legal token is the closing quote (once minLength is
# met), else a word; after a value, closing beats ",", so arrays and objects stay minimal.
BIAS_CONTROL, BIAS_EOS, BIAS_BYTE, BIAS_CHAR, BIAS_OTHER, BIAS_WORD = -20, 1, -20, 0, -1.5, 3
BIAS_PUNCT = {'"': 9.0, ":": 1.0, "}": 1.5, "]": 1.5, ",": -3.0, "{": -1.0, "[": -1.0, "\\": -10.0,
              SPACE: -1.0}
QUOTE_AFTER_QUOTE = -8.0  # right after a quote, another one is unlikely: no empty strings


def _vocab() -> tuple[list[str], list[float], list[int], list[float]]:
    """Tokens, scores, token types and the output bias of the tiny SentencePiece vocab."""
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    bias = [BIAS_CONTROL, BIAS_CONTROL, BIAS_EOS]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TokenType.BYTE)
        bias.append(BIAS_BYTE)
    normal = [SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    normal += PIECES + [SPACE + w for w in WORDS]
    for piece in dict.fromkeys(normal):
        tokens.append(piece)
        types.append(TokenType.NORMAL)
        if piece in BIAS_PUNCT:
            bias.append(BIAS_PUNCT[piece])
        elif piece.startswith(SPACE):
            bias.append(BIAS_WORD)
        elif piece.isalpha():
            bias.append(BIAS_CHAR + 0.5 * (len(piece) - 1))
        else:
            bias.append(BIAS_OTHER)
    # SentencePiece merges prefer higher scores: longer pieces win, bytes/control score 0.
    scores = [0.0] * (3 + 256) + [float(len(t)) - i / 1000
                                  for i, t in enumerate(tokens[3 + 256:])]
    return tokens, scores, [int(t) for t in types], bias


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight llama GGUF with a biased output layer to ``path``."""
    import gguf  # numpy and gguf come with llama-cpp-python[server] / gguf, not scenemake
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types, bias = _vocab()
    n_vocab, head_dim = len(tokens), N_EMBD // N_HEAD

    def rand(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("scenemake-tiny-test")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are ggml's ne reversed: a (out, in) matrix has ne = [in, out].
    # Dimension 0 of the residual stream carries a constant, so after the final RMS norm
    # it is about sqrt(N_EMBD / (1 + ...)) and output.weight[:, 0] turns it into ``bias``.
    # The layers never write dimension 0 (row 0 of attn_output/ffn_down is zero).
    # Dimension 1 flags the quote token, so the logits after a quote can differ.
    emb = rand(n_vocab, N_EMBD, std=0.05)
    emb[:, 0] = 1.0
    quote = tokens.index('"')
    emb[:, 1] = 0.0
    emb[quote, 1] = 1.0
    w.add_tensor("token_embd.weight", emb)
    for i in range(N_LAYER):
        attn_out, ffn_down = rand(N_EMBD, N_EMBD, std=0.002), rand(N_EMBD, N_FF, std=0.002)
        attn_out[0], ffn_down[0] = 0.0, 0.0
        blk = {
            "attn_norm": np.ones(N_EMBD, np.float32),
            "attn_q": rand(N_EMBD, N_EMBD, std=0.2),
            "attn_k": rand(N_HEAD * head_dim, N_EMBD, std=0.2),
            "attn_v": rand(N_HEAD * head_dim, N_EMBD, std=0.2),
            "attn_output": attn_out,
            "ffn_norm": np.ones(N_EMBD, np.float32),
            "ffn_gate": rand(N_FF, N_EMBD, std=0.2),
            "ffn_up": rand(N_FF, N_EMBD, std=0.2),
            "ffn_down": ffn_down,
        }
        for name, t in blk.items():
            w.add_tensor(f"blk.{i}.{name}.weight", t)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    # Normalised dim 0 is about 6.7 (measured: logits ~ 0.95 * bias + noise of std ~0.7).
    out = rand(n_vocab, N_EMBD, std=0.15)
    out[:, 0] = np.asarray(bias, dtype=np.float32) / 7.0
    out[:, 1] = 0.0
    out[quote, 1] = QUOTE_AFTER_QUOTE / 7.0
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- the server -------------------------------------------------------------------------
def llama_available() -> bool:
    """Whether llama-cpp-python's server (and gguf, to write the model) can be imported."""
    try:
        return (importlib.util.find_spec("llama_cpp.server") is not None
                and importlib.util.find_spec("gguf") is not None)
    except ImportError:
        return False


def require_llama() -> None:
    """Skip the calling test when llama-cpp is missing; fail under CI (support.parts)."""
    require(llama_available(), "llama-cpp-python[server] and gguf",
            "pip install -e '.[test,llama]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, as a context manager."""

    def __init__(self, model: Path, port: int | None = None, log: Path | None = None,
                 timeout: float = 60, extra_args: tuple[str, ...] = ()):
        self.model = Path(model)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        if log is None:
            fd, log = tempfile.mkstemp(prefix="llama_server_", suffix=".log")
            os.close(fd)
        self.log = Path(log)
        self.timeout = timeout
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.model_id: str | None = None
        self.startup_s: float | None = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1",
               "--n_threads_batch", "1", "--n_ctx", str(N_CTX),
               # as the local provider runs it: by default a new request cuts a streamed
               # answer short ([DONE] early), so two concurrent streams keep cutting each other
               "--interrupt_requests", "False", *self.extra_args]
        t0 = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}) "
                                       f"while starting; log {self.log}:\n{self.log_tail()}")
                try:
                    r = httpx.get(f"{self.base_url}/models", timeout=2)
                    if r.status_code == 200:
                        self.model_id = r.json()["data"][0]["id"]
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - t0 > self.timeout:
                    raise RuntimeError(f"llama_cpp.server did not answer in {self.timeout}s; "
                                       f"log {self.log}:\n{self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        stop_child(self.proc)

    def __enter__(self) -> LlamaServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_llama_server(model: Path, port: int | None = None, **kw) -> LlamaServer:
    """Start a server on ``model`` and wait until it answers; stop it with ``.stop()``
    or use the result as a context manager."""
    return LlamaServer(model, port, **kw).start()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Optional hook (import it into conftest.py too): skip/fail ``llama``-marked tests
    that do not use the ``llama_server`` fixture, when llama-cpp is missing."""
    if item.get_closest_marker("llama") is not None:
        require_llama()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    """One llama.cpp server on a freshly written tiny model, for the whole session."""
    require_llama()
    tmp = tmp_path_factory.mktemp("llama")
    model = write_tiny_gguf(tmp / "tiny-llama.gguf")
    with LlamaServer(model, log=tmp / "server.log") as server:
        yield server

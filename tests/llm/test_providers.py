"""The provider registry: built-ins and third-party providers join the same way."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib.metadata import EntryPoint

import pytest

from pipeline.core.errors import UserError
from pipeline.llm import (
    CallContext,
    LLMRequest,
    ProviderResult,
    build_client,
    providers,
    read_calls,
)
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides


class EchoProvider:
    """Says back the last message, upper-cased, and counts its calls."""

    name = "echo"

    def __init__(self, settings):
        self.settings = settings
        self.calls = 0

    def generate(self, request: LLMRequest) -> ProviderResult:
        self.calls += 1
        return ProviderResult(request.messages[-1]["content"].upper(), 3, 2)


class EchoPlugin:
    def __init__(self):
        self.made: list[EchoProvider] = []

    def create(self, config):
        self.made.append(EchoProvider(config.settings))
        return self.made[-1]


def _request(provider: str, text: str = "hello keeper") -> LLMRequest:
    return LLMRequest(provider, "echo-1", ({"role": "user", "content": text},),
                      {"temperature": 0.0})


@pytest.fixture
def echo():
    plugin = EchoPlugin()
    providers.register("echo", plugin)
    yield plugin
    providers.unregister("echo")


def test_a_registered_provider_answers_through_build_client(echo, tmp_path):
    client = build_client(tmp_path, {"max_reasks": 0})
    first = client.complete(_request("echo"), CallContext(task="t1"))
    again = client.complete(_request("echo"), CallContext(task="t1"))
    assert first.text == "HELLO KEEPER" and first.cache == "miss" and again.cache == "hit"
    assert len(echo.made) == 1 and echo.made[0].calls == 1  # one provider per client
    assert echo.made[0].settings["max_reasks"] == 0
    calls = read_calls(tmp_path / "llm_calls.jsonl")
    assert [(c["provider"], c["cache"], c["tokens_in"]) for c in calls] == [
        ("echo", "miss", 3), ("echo", "hit", 3)]


def test_settings_accept_a_registered_name_and_refuse_others(echo, monkeypatch):
    monkeypatch.setenv("SCENEMAKE_MODEL", "echo:echo-1")
    model, _ = apply_env_overrides(ModelSettings(), Endpoint(), "book.json")
    assert (model.provider, model.model) == ("echo", "echo-1")
    monkeypatch.setenv("SCENEMAKE_MODEL", "nosuch:m")
    with pytest.raises(UserError) as err:
        apply_env_overrides(ModelSettings(), Endpoint(), "book.json")
    assert "unknown provider 'nosuch'" in str(err.value) and "echo" in str(err.value)
    assert "offline" in str(err.value) and "openai" in str(err.value)


def test_a_third_party_provider_joins_through_its_entry_point(monkeypatch, tmp_path):
    module = types.ModuleType("scenemake_echo_plugin")
    module.PLUGIN = EchoPlugin()
    monkeypatch.setitem(sys.modules, "scenemake_echo_plugin", module)
    looked: list[str] = []

    def entry_points(group):
        looked.append(group)
        return [EntryPoint("echo3", "scenemake_echo_plugin:PLUGIN", group)]

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    monkeypatch.setattr(providers, "_entry_points_read", False)
    try:
        client = build_client(tmp_path)
        # A built-in name never reads the entry points ...
        client.complete(_request("offline"), CallContext(task="t"))
        assert looked == []
        # ... an unknown one does, once.
        assert client.complete(_request("echo3"), CallContext(task="t")).text == "HELLO KEEPER"
        assert looked == [providers.ENTRY_POINT_GROUP]
        assert module.PLUGIN.made[0].calls == 1
        assert read_calls(tmp_path / "llm_calls.jsonl")[-1]["provider"] == "echo3"
    finally:
        providers.unregister("echo3")


def test_an_unknown_provider_is_one_line_naming_the_known_ones(tmp_path):
    client = build_client(tmp_path)
    with pytest.raises(UserError) as err:
        client.complete(_request("nosuch"), CallContext(task="t"))
    text = str(err.value)
    assert "unknown LLM provider 'nosuch'" in text and "offline" in text and "\n" not in text


def test_the_registry_imports_no_provider_until_one_is_used():
    code = ("import sys; from pipeline.llm import providers, settings; "
            "assert 'openai' in providers.names(); "
            "print(sorted(m for m in sys.modules if m.startswith(('httpx', "
            "'pipeline.llm.providers.openai', 'pipeline.llm.providers.local'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("spec, says", [
    ("nonsense:thing", "SCENEMAKE_MODEL=nonsense:thing: unknown provider 'nonsense'"),
    ("nonsense", "SCENEMAKE_MODEL=nonsense is not PROVIDER:MODEL"),
    ("local:/no/such/model.gguf", "SCENEMAKE_MODEL=local:/no/such/model.gguf: model file "),
])
def test_a_bad_scenemake_model_blames_the_variable_not_the_book(project, spec, says):
    proc = project.doit(env={"SCENEMAKE_MODEL": spec})
    assert proc.returncode == 3 and "Traceback" not in proc.out
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith(f"ERROR: {says}"), line
    assert "book.json:" not in line  # the book is fine; it is named only as the way back

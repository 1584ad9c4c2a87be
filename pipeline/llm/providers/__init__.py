"""The provider registry: a provider's name -> the plugin that makes it.

A plugin is any object with

- ``create(config: ProviderConfig) -> Provider``: the provider for one client (one instance
  per client, shared by its threads), and optionally
- ``configure(model, endpoint) -> (model, endpoint)``: settles a config's model settings
  (``pipeline.llm.settings``) for this provider before any request is built, e.g. a default
  ``base_url`` or the content name of a local model file. Raise ``UserError`` for bad input.
- ``default_model``: when set, ``SCENEMAKE_MODEL=NAME`` alone (no ``:MODEL``) means it.
- ``free``: its calls cost $0 (no price entry, no warning); ``memory_key``: where the
  workspace's ``endpoints.json`` keeps what it measured (else the endpoint's ``base_url``);
  ``estimate_seconds(endpoint, calls, tokens_in, tokens_out)``: its own time estimate;
  ``answers_at_once(endpoint)``: how many answers it gives at once (the L7 runner asks its
  independent candidates and judges that many at a time).
- ``model_files(model) -> list[Path]``: the files a configured model's answers come from
  (a local model's weights): a build plan watches them, since a replaced file changes
  every answer. A remote model has none.

The built-ins register themselves below with :func:`register`, exactly as a third-party
plugin joins: through the entry point group ``scenemake.providers`` (name = the provider's
name, value = ``"module:attr"`` of the plugin), which is read only when a name is asked for
that nobody registered, so a no-op ``doit`` imports nothing more. A ``"module:attr"`` value
is imported on first use (the HTTP providers import httpx: ~0.1 s).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError

from ..request import Provider

ENTRY_POINT_GROUP = "scenemake.providers"

_registry: dict[str, Any] = {}  # name -> plugin, or "module:attr" until first use
_lock = threading.RLock()
_entry_points_read = False


@dataclass(frozen=True)
class ProviderConfig:
    """What a plugin's ``create`` gets: the endpoint settings and the client's surroundings."""

    settings: Mapping[str, Any] = field(default_factory=dict)  # Endpoint fields
    state_dir: Path | None = None  # the workspace's .scenemake (None: remember nothing)
    transport: Any = None  # an httpx.BaseTransport for HTTP providers (tests: MockTransport)


def register(name: str, plugin: Any) -> None:
    """Make ``name`` a provider: ``plugin`` is the plugin or a ``"module:attr"`` reference."""
    with _lock:
        _registry[name] = plugin


def unregister(name: str) -> None:
    """Forget ``name`` (tests that registered a provider clean up with it)."""
    with _lock:
        _registry.pop(name, None)


def _read_entry_points() -> None:
    global _entry_points_read
    with _lock:
        if _entry_points_read:
            return
        _entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _registry.setdefault(ep.name, ep.value)


def names() -> list[str]:
    """Every provider name, third-party ones included (reads the entry points)."""
    _read_entry_points()
    with _lock:
        return sorted(_registry)


def plugin(name: str) -> Any | None:
    """The plugin registered as ``name`` (loaded now if it was a reference), or None."""
    with _lock:
        found = _registry.get(name)
    if found is None:
        _read_entry_points()
        with _lock:
            found = _registry.get(name)
        if found is None:
            return None
    if isinstance(found, str):
        module, _, attr = found.partition(":")
        try:
            loaded: Any = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                loaded = getattr(loaded, part)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"provider '{name}' cannot be loaded from {found} ({exc})",
                            fix="reinstall the package that provides it") from None
        with _lock:
            _registry[name] = loaded
        found = loaded
    return found


def model_files(model) -> list[str]:
    """The files a configured model's answers come from (see the module docstring)."""
    found = plugin(model.provider)
    files = getattr(found, "model_files", None)
    return [str(p) for p in files(model)] if files is not None else []


def unknown(name: str) -> UserError:
    """The one-line error for a provider nobody registered."""
    return UserError(f"unknown LLM provider '{name}' (known: {', '.join(names())})",
                     fix=f"use a known provider, or install a plugin that registers "
                         f"'{name}' in the entry point group {ENTRY_POINT_GROUP}")


def create(name: str, config: ProviderConfig) -> Provider:
    """A new provider ``name`` for ``config``; UserError when no plugin has that name."""
    found = plugin(name)
    if found is None:
        raise unknown(name)
    return found.create(config)


class Providers(Mapping):
    """One client's providers, each made on first use from the registry (thread-safe).

    Iterating gives only the providers made so far (e.g. to read their limiters).
    """

    def __init__(self, config: ProviderConfig | None = None):
        self.config = config or ProviderConfig()
        self._made: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Provider:
        made = self._made.get(name)
        if made is not None:
            return made
        with self._lock:
            made = self._made.get(name)
            if made is None:
                if plugin(name) is None:
                    raise KeyError(name)
                made = self._made[name] = create(name, self.config)
            return made

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._made))

    def __len__(self) -> int:
        return len(self._made)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and plugin(name) is not None

    def close(self) -> None:
        """Close every provider made that has something to close (a server, a connection)."""
        with self._lock:
            made = list(self._made.values())
        for provider in made:
            close = getattr(provider, "close", None)
            if close is not None:
                close()


# The built-ins join like any plugin (names only: nothing is imported until first use).
register("offline", "pipeline.llm.providers.offline:PLUGIN")
register("openai", "pipeline.llm.providers.openai:PLUGIN")
register("local", "pipeline.llm.providers.local:PLUGIN")

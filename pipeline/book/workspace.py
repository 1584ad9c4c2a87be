"""A book on disk: config, outline, initial state, templates, and where its artifacts go."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# declared once, in the phase table; re-exported here, where the task generators look
from pipeline.book.phase_table import LLM_PHASES, PHASES  # noqa: F401
from pipeline.core import schemas
from pipeline.core.errors import UserError

# re-exported: older imports name pipeline.book.workspace
from pipeline.core.jsonio import display_path, parse_model, read_json, validation_error  # noqa: F401

if TYPE_CHECKING:  # the models (pydantic) load with the book, not on a no-op doit
    from pipeline.book.models import BookConfig, Outline, OutlineScene, State

TEMPLATE_NAMES = ("system",) + LLM_PHASES
PACKAGE_DIR = Path(__file__).parent.parent  # this install of scenemake (the pipeline package)
DEFAULT_TEMPLATES = Path(__file__).parent / "templates"
# Where the default templates lived before the book became a family of its own; build DBs
# that recorded them there are moved to the new folder by a migration, not rebuilt.
OLD_TEMPLATES_FOLDER = "templates"
TEMPLATES_FOLDER = "book/templates"


def default_template_home(path: str) -> str | None:
    """The package folder of a recorded default template (``<...>/pipeline/book/templates/
    NAME.j2``, or ``<...>/pipeline/templates/NAME.j2`` as recorded before the book moved),
    from this install or another; None for any other path."""
    folder, _, name = path.rpartition("/")
    if not name.endswith(".j2") or name[:-3] not in TEMPLATE_NAMES:
        return None
    for inner in (TEMPLATES_FOLDER, OLD_TEMPLATES_FOLDER):
        if folder.endswith("/" + inner):
            package = folder[: -len(inner) - 1]
            if package.rpartition("/")[2] == PACKAGE_DIR.name:
                return package
    return None


@dataclass
class Workspace:
    """The workspace folder: books, shared LLM cache and call log."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / ".scenemake"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "llm_cache"

    @property
    def call_log(self) -> Path:
        return self.state_dir / "llm_calls.jsonl"

    def db_path(self, book: str) -> Path:
        return self.state_dir / "books" / f"{book}.sqlite"

    def book_dir(self, book: str) -> Path:
        return self.root / "books" / book

    def default_book(self) -> str:
        cfg = self.root / "scenemake.json"
        if os.path.lexists(cfg):  # a dangling link or a symlink loop is an error, not "absent"
            data = read_json(cfg, "workspace config")
            if not isinstance(data, dict):
                raise UserError(f"the workspace config is {type(data).__name__}, not an object",
                                path=display_path(cfg),
                                fix='write {"default_book": "NAME"}, or remove the file')
            if "default_book" in data:
                name = data["default_book"]
                if not isinstance(name, str) or not name:
                    raise UserError(f"default_book is {json.dumps(name)}, not a book name",
                                    path=display_path(cfg), field="default_book",
                                    fix='e.g. "default_book": "example"')
                return name
        books = sorted(p.name for p in (self.root / "books").glob("*") if p.is_dir())
        if len(books) == 1:
            return books[0]
        raise UserError("cannot tell which book to build", path=display_path(cfg),
                        field="default_book", fix="set it, or pass book=NAME")


@dataclass
class Book:
    """A loaded, validated book."""

    name: str
    dir: Path
    workspace: Workspace
    config: BookConfig
    outline: Outline
    initial_state: State
    scenes: list[OutlineScene]
    templates: dict[str, str] = field(default_factory=dict)  # name -> path for file_dep
    # A try of the book (pipeline/book/tries.py): its name, and the folder its artifacts and
    # ledgers go to instead of ``draft/`` (None: the book's own, e.g. for an estimate).
    side: str | None = None
    side_draft: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "book.json"

    @property
    def versions_name(self) -> str:
        """Whose kept versions these are (pipeline/book/versions.py): the book's, or a
        try's apart from them."""
        return f"{self.name}/tries/{self.side}" if self.side else self.name

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def draft(self) -> Path:
        return self.side_draft or self.dir / "draft"

    @property
    def phase_history(self) -> Path:
        return self.draft / "context" / "phase_history"

    def ledger_path(self, scene_id: str) -> Path:
        return self.phase_history / f"{scene_id}.json"

    def phase_dir(self, scene_id: str, phase: str) -> Path:
        return self.draft / "scenes" / scene_id / phase

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {s.id: i for i, s in enumerate(self.scenes)}

    def scene(self, scene_id: str) -> OutlineScene:
        i = self._index.get(scene_id)
        if i is not None:
            return self.scenes[i]
        raise UserError(f"unknown scene '{scene_id}'", path=display_path(self.dir / "outline.json"),
                        fix=f"known scenes: {', '.join(s.id for s in self.scenes[:8])}"
                        + (" ..." if len(self.scenes) > 8 else ""))

    def previous(self, scene_id: str) -> OutlineScene | None:
        i = self._index[scene_id]
        return self.scenes[i - 1] if i else None


def check_scene_id(scene_id: str) -> str:
    """Refuse ids that are not chNNN_scNNN (they become paths: ``../x`` must never pass)."""
    from pipeline.book.models import SCENE_ID

    if not SCENE_ID.match(scene_id):
        raise UserError(f"scene id '{scene_id}' is not of the form chNNN_scNNN",
                        fix="e.g. ch001_sc002")
    return scene_id


def _inside(path: Path, *folders: Path) -> bool:
    return any(path.is_relative_to(folder.resolve()) for folder in folders)


def resolve_templates(book_dir: Path, config: BookConfig) -> dict[str, str]:
    """Template name -> file: config entry, else book override, else package default.

    A template is read into prompts (and so into the response cache and the artifacts):
    it must be a file of the workspace, or one of scenemake's defaults, after symlinks.
    """
    unknown = sorted(set(config.templates) - set(TEMPLATE_NAMES))
    cfg = display_path(book_dir / "book.json")
    if unknown:
        raise UserError(f"unknown template '{unknown[0]}'",
                        path=cfg, field=f"templates.{unknown[0]}",
                        fix=f"known: {', '.join(TEMPLATE_NAMES)}")
    workspace_root = book_dir.parent.parent
    out = {}
    for name in TEMPLATE_NAMES:
        if name in config.templates:
            given = config.templates[name]
            p = (book_dir / given).resolve()
            if not _inside(p, workspace_root, DEFAULT_TEMPLATES):
                raise UserError(f"template file {given} is outside the workspace",
                                path=cfg, field=f"templates.{name}",
                                fix="put the template in the book's folder (e.g. "
                                    f"templates/{name}.j2)")
            if not p.is_file():
                raise UserError(f"template file {given} does not exist",
                                path=cfg, field=f"templates.{name}",
                                fix="create it or remove the entry to use the default")
        else:
            p = book_dir / "templates" / f"{name}.j2"
            if p.is_file() or p.is_symlink():
                if not _inside(p.resolve(), workspace_root, DEFAULT_TEMPLATES):
                    raise UserError("template override links outside the workspace",
                                    path=display_path(p),
                                    fix="make it a file of the workspace, or remove it")
            if not p.is_file():
                p = DEFAULT_TEMPLATES / f"{name}.j2"
                if not p.is_file():
                    raise UserError(f"default template {name}.j2 is missing",
                                    path=display_path(p), fix="reinstall scenemake")
        out[name] = display_path(p)
    return out


def _check_world(outline: Outline, state: State, outline_path: str) -> list[OutlineScene]:
    """Scenes in order; ids unique; every character/location known when the scene starts."""
    chars, locs = set(state.characters), set(state.locations)
    scenes: list[OutlineScene] = []
    seen: set[str] = set()
    for ci, chapter in enumerate(outline.chapters):
        for si, scene in enumerate(chapter.scenes):
            where = f"chapters.{ci}.scenes.{si}"
            if scene.id in seen:
                raise UserError(f"duplicate scene id '{scene.id}'", path=outline_path,
                                field=f"{where}.id", fix="scene ids must be unique")
            if not scene.id.startswith(chapter.id + "_"):
                raise UserError(f"scene '{scene.id}' is not in chapter '{chapter.id}'",
                                path=outline_path, field=f"{where}.id",
                                fix=f"name it {chapter.id}_scNNN")
            seen.add(scene.id)
            chars |= {c.id for c in scene.new_characters}
            locs |= {loc.id for loc in scene.new_locations}
            for c in scene.characters:
                if c not in chars:
                    raise UserError(f"unknown character '{c}'", path=outline_path,
                                    field=f"{where}.characters",
                                    fix="add it to state.json or to new_characters")
            if scene.location not in locs:
                raise UserError(f"unknown location '{scene.location}'", path=outline_path,
                                field=f"{where}.location",
                                fix="add it to state.json or to new_locations")
            scenes.append(scene)
    return scenes


def load_book(workspace: Workspace, name: str) -> Book:
    """Load and validate a book; any problem is one UserError naming file and field."""
    from pipeline.book.models import BookConfig, Outline, State

    if not name or "/" in name or name.startswith("."):
        raise UserError(f"book name '{name}' is not a folder name", fix="e.g. book=example")
    book_dir = workspace.book_dir(name)
    if not book_dir.is_dir():
        raise UserError(f"no book '{name}'", path=display_path(book_dir),
                        fix="create the folder or pass another book=NAME")
    cfg_path = book_dir / "book.json"
    fix = "create it or check the book name"
    config = schemas.parse(BookConfig, read_json(cfg_path, "book config", fix),
                           display_path(cfg_path), schema="book_config")
    from pipeline.llm.settings import apply_env_overrides  # pydantic: not on a no-op doit

    model, endpoint = apply_env_overrides(config.model, config.endpoint, display_path(cfg_path))
    config = config.model_copy(update={"model": model, "endpoint": endpoint})
    outline_path = book_dir / "outline.json"
    outline = schemas.parse(Outline, read_json(outline_path, "outline", fix),
                            display_path(outline_path), schema="book_outline")
    state_path = book_dir / "state.json"
    state = schemas.parse(State, read_json(state_path, "initial state", fix),
                          display_path(state_path), schema="book_state")
    scenes = _check_world(outline, state, display_path(outline_path))
    templates = resolve_templates(book_dir, config)
    return Book(name=name, dir=book_dir, workspace=workspace, config=config, outline=outline,
                initial_state=state, scenes=scenes, templates=templates)

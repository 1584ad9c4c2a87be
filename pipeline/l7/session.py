"""One L7 run: its command-line settings, its validated inputs, and where its files go."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from pipeline.core.jsonio import display_path, parse_model, read_json
from pipeline.llm.settings import ModelSettings

from . import llm, policies, scoring
from .contracts import (
    Character,
    CrossSession,
    InputRef,
    PartialRerun,
    PolicyRecord,
    PromptMapPack,
    Scene,
    ScenesV2,
    ScoreSpec,
    ScoreSpecUse,
    SessionInput,
    SessionObjective,
    check_schema,
)

ENVS = ("dev", "staging", "prod")


@dataclass(frozen=True)
class RunConfig:
    """The runner's flags, as given (paths relative to the working folder)."""

    session_input: str
    session_objective: str
    scenes_v2: str
    out_dir: str
    score_spec: str | None = None
    allow_cross_session: bool = False
    allow_score_spec_override: bool = False
    override_reason: str | None = None
    pipeline_env: str = "prod"
    scene_ids: tuple[str, ...] = ()
    base_prompt_map_pack: str | None = None
    state_dir: str = "workspace/.scenemake"

    @property
    def partial(self) -> bool:
        return bool(self.scene_ids)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (what doit's ``config_changed`` hashes)."""
        data = dataclasses.asdict(self)
        data["scene_ids"] = list(self.scene_ids)
        return data


@dataclass(frozen=True)
class Layout:
    """Where a session's build records and work files live."""

    root: Path  # <state_dir>/l7/<session_id>

    @property
    def db(self) -> Path:
        return self.root / "build.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def gate_in_report(self) -> Path:
        return self.work / "gate_in_report.json"

    @property
    def generation(self) -> Path:
        """Model settings and N: all that candidate generation takes from session level."""
        return self.work / "session" / "generation.json"

    @property
    def score_spec(self) -> Path:
        return self.work / "session" / "score_spec.json"

    @property
    def rubric(self) -> Path:
        """The judged criteria only: a weight change leaves it, and the judge, alone."""
        return self.work / "session" / "rubric.json"

    @property
    def gate_out_keep(self) -> Path:
        """Gate-Out's kept per-scene schema checks (a cache: deleting it costs one full check)."""
        return self.work / "gate_out_keep.json"

    def scene(self, sid: str, name: str) -> Path:
        return self.work / "scenes" / sid / f"{name}.json"

    def pair(self, a: str, b: str) -> Path:
        return self.work / "pairs" / f"{a}+{b}.json"

    def out(self, name: str) -> Path:
        return self.work / "out" / name


def layout_for(state_dir: str, session_id: str) -> Layout:
    """The layout of session ``session_id`` under ``state_dir``."""
    return Layout(Path(state_dir) / "l7" / session_id)


@dataclass
class Session:
    """A run's inputs, validated, with the policy decisions taken on them."""

    cfg: RunConfig
    session_input: SessionInput
    objective: SessionObjective
    scenes_v2: ScenesV2
    scenes_raw: dict
    spec: ScoreSpec
    spec_path: str
    base_pack: PromptMapPack | None
    policy: PolicyRecord
    inputs: dict[str, InputRef]
    layout: Layout
    model: ModelSettings
    generations: dict[str, int] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.session_input.session_id

    @property
    def objective_id(self) -> str:
        return self.session_input.objective_id

    @property
    def order(self) -> list[str]:
        return [s.scene_id for s in self.scenes_v2.scenes]

    @property
    def active(self) -> list[str]:
        """Scenes this run generates: the named ones, or all."""
        named = set(self.cfg.scene_ids)
        return [sid for sid in self.order if not named or sid in named]

    @property
    def merged(self) -> list[str]:
        """Scenes taken unchanged from the base pack."""
        return [sid for sid in self.order if sid not in self.active]

    @functools.cached_property
    def scenes(self) -> dict[str, Scene]:
        return {s.scene_id: s for s in self.scenes_v2.scenes}

    @functools.cached_property
    def characters(self) -> dict[str, Character]:
        return {c.id: c for c in self.scenes_v2.characters}

    @property
    def candidates_per_scene(self) -> int:
        return self.objective.candidates_per_scene or self.spec.candidates_per_scene

    def pairs(self) -> list[tuple[str, str]]:
        """Adjacent scene pairs this run audits (those touching a generated scene)."""
        order, active = self.order, set(self.active)
        return [(a, b) for a, b in zip(order, order[1:], strict=False)
                if a in active or b in active]


def _load(path: str, what: str, schema: str, named_in: tuple[str, str] | None = None) -> Any:
    """``what``'s JSON at ``path``, checked against ``schema``. ``named_in``: the (file,
    field) the path was read from, for the error that names where to fix it (default: the
    command line)."""
    p = Path(path)
    if not p.exists():
        fix = (f"the path comes from field '{named_in[1]}' of {display_path(named_in[0])}, "
               "relative to the folder the command runs in: correct it there") if named_in \
            else "check the path given on the command line"
        raise UserError(f"{what} not found", path=display_path(p), fix=fix)
    if p.is_dir():
        raise UserError(f"{what} is a folder, not a JSON file", path=display_path(p))
    data = read_json(p, what)
    check_schema(data, schema, display_path(p))
    return data


def _unique(items: list[str], what: str, where: str, path: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            raise UserError(f"duplicate {what} '{item}'", path=path,
                            field=where.format(i=i), fix=f"{what}s must be unique")
        seen.add(item)


def _ref(path: str) -> InputRef:
    return InputRef(path=display_path(path), blake3=hash_file(path))


def load_session(cfg: RunConfig) -> Session:
    """Read, validate and policy-check every input; any problem is one UserError (exit 2)."""
    if cfg.pipeline_env not in ENVS:
        raise UserError(f"--pipeline-env must be one of {', '.join(ENVS)}, "
                        f"not '{cfg.pipeline_env}'")
    si_data = _load(cfg.session_input, "session input", "session_input")
    si = parse_model(SessionInput, si_data, display_path(cfg.session_input))
    obj_data = _load(cfg.session_objective, "session objective", "session_objective")
    obj = parse_model(SessionObjective, obj_data, display_path(cfg.session_objective))
    policies.check_session_ids(si, obj)
    model, _ = llm.settings(obj, cfg.session_objective)

    policies.check_override_flags(cfg.allow_score_spec_override, cfg.override_reason,
                                  cfg.pipeline_env)
    spec_path, override = policies.resolve_score_spec(cfg.score_spec, obj,
                                                      cfg.allow_score_spec_override)
    spec_data = _load(spec_path, "score spec", "score_spec",
                      named_in=None if cfg.score_spec else (cfg.session_objective,
                                                            "score_spec_ref"))
    spec = parse_model(ScoreSpec, spec_data, display_path(spec_path))
    scoring.check_params(spec, display_path(spec_path))

    scenes_path = display_path(cfg.scenes_v2)
    scenes_raw = _load(cfg.scenes_v2, "scenes_v2", "scenes_v2")
    scenes = parse_model(ScenesV2, scenes_raw, scenes_path)
    _unique([s.scene_id for s in scenes.scenes], "scene id", "scenes[{i}].scene_id",
            scenes_path)
    _unique([c.id for c in scenes.characters], "character id", "characters[{i}].id",
            scenes_path)
    cross = policies.check_cross_session(scenes, si.session_id, cfg.allow_cross_session,
                                         scenes_path)

    order = [s.scene_id for s in scenes.scenes]
    policies.check_partial_flags(cfg.scene_ids, cfg.base_prompt_map_pack)
    policies.check_scene_ids(cfg.scene_ids, order, scenes_path)
    base_pack = None
    generations = dict.fromkeys(order, 0)
    partial = None
    inputs = {"session_input": _ref(cfg.session_input),
              "session_objective": _ref(cfg.session_objective),
              "scenes_v2": _ref(cfg.scenes_v2), "score_spec": _ref(spec_path)}
    if cfg.base_prompt_map_pack:
        pack_path = display_path(cfg.base_prompt_map_pack)
        pack_data = _load(cfg.base_prompt_map_pack, "base prompt map pack", "prompt_map_pack")
        base_pack = parse_model(PromptMapPack, pack_data, pack_path)
        policies.check_base_pack(base_pack, si, obj, order, cfg.scene_ids, pack_path)
        in_pack = {s.scene_id: s for s in base_pack.scenes}
        for sid in cfg.scene_ids:
            # A named scene is asked afresh: its generation number is part of the request.
            generations[sid] = in_pack[sid].generation + 1 if sid in in_pack else 0
        for sid in order:
            if sid not in cfg.scene_ids:
                generations[sid] = in_pack[sid].generation
        inputs["base_prompt_map_pack"] = _ref(cfg.base_prompt_map_pack)
        partial = PartialRerun(scene_ids=[s for s in order if s in cfg.scene_ids],
                               base_prompt_map_pack=pack_path,
                               base_pack_blake3=inputs["base_prompt_map_pack"].blake3,
                               generations={s: generations[s] for s in order
                                            if s in cfg.scene_ids})
    spec_use = ScoreSpecUse(path=display_path(spec_path), ref=obj.score_spec_ref,
                            spec_id=spec.spec_id, version=spec.version,
                            blake3=inputs["score_spec"].blake3, override=override,
                            override_reason=cfg.override_reason.strip() if override
                            and cfg.override_reason else None)
    policy = PolicyRecord(pipeline_env=cfg.pipeline_env, score_spec=spec_use,  # type: ignore[arg-type]
                          cross_session=CrossSession(allowed=cfg.allow_cross_session,
                                                     used=cross,
                                                     scenes_v2_session_id=scenes.session_id),
                          partial_rerun=partial)
    return Session(cfg=cfg, session_input=si, objective=obj, scenes_v2=scenes,
                   scenes_raw=scenes_raw, spec=spec, spec_path=spec_path, base_pack=base_pack,
                   policy=policy, inputs=inputs,
                   layout=layout_for(cfg.state_dir, si.session_id), model=model,
                   generations=generations)


def _stat(path: str | None) -> tuple:
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    return (path, st.st_mtime_ns, st.st_size, st.st_ino) if st else (path,)


_cache: dict[RunConfig, tuple[tuple, Session]] = {}


def session_for(cfg: RunConfig) -> Session:
    """:func:`load_session`, memoised while the input files are unchanged (tasks share it)."""
    files = [cfg.session_input, cfg.session_objective, cfg.scenes_v2, cfg.score_spec,
             cfg.base_prompt_map_pack]
    found = _cache.get(cfg)
    if found is not None:
        stamp, session = found
        if stamp == tuple(_stat(p) for p in [*files, session.spec_path]):
            return session
    session = load_session(cfg)
    _cache[cfg] = (tuple(_stat(p) for p in [*files, session.spec_path]), session)
    return session

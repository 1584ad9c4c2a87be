"""The spec's policy rules (Policy notes, Partial rerun notes).

Each violation is a :class:`PolicyError`: one line that names the rule, exit code 2.
"""

from __future__ import annotations

import os

from pipeline.core.errors import UserError

from .contracts import PromptMapPack, ScenesV2, SessionInput, SessionObjective


class PolicyError(UserError):
    """A refused run: the message starts with ``policy '<rule>':``."""

    def __init__(self, rule: str, message: str, *, fix: str | None = None,
                 path: str | None = None):
        self.rule = rule
        super().__init__(f"policy '{rule}': {message}", fix=fix, path=path)


def same_file(a: str, b: str) -> bool:
    """True if two paths (relative to the working folder) name the same file."""
    return os.path.realpath(a) == os.path.realpath(b)


def check_session_ids(si: SessionInput, obj: SessionObjective) -> None:
    """session_input and session_objective always agree on session_id and objective_id."""
    for field in ("session_id", "objective_id"):
        a, b = getattr(si, field), getattr(obj, field)
        if a != b:
            raise PolicyError("session_ids_match",
                              f"session_input.{field} '{a}' differs from "
                              f"session_objective.{field} '{b}'",
                              fix="both files must describe the same session")


def check_override_flags(allow: bool, reason: str | None, env: str) -> None:
    """The override flag needs a reason, a reason needs the flag, and prod allows neither."""
    if reason is not None and not allow:
        raise PolicyError("override_reason_without_override",
                          "--override-reason is only meaningful with --allow-score-spec-override")
    if not allow:
        return
    if env == "prod":
        raise PolicyError("score_spec_override_prod",
                          "--allow-score-spec-override is never allowed with --pipeline-env prod",
                          fix="use the objective's score_spec_ref, or run in dev/staging")
    if reason is None or not reason.strip():
        raise PolicyError("override_reason_required",
                          "--allow-score-spec-override needs a non-empty --override-reason",
                          fix='e.g. --override-reason "recovery rerun after upstream failure"')


def resolve_score_spec(flag: str | None, obj: SessionObjective, allow: bool) -> tuple[str, bool]:
    """(score spec path to use, whether it overrides ``score_spec_ref``)."""
    ref = obj.score_spec_ref
    if flag is None or same_file(flag, ref):
        return (flag or ref), False
    if not allow:
        raise PolicyError("score_spec_ref",
                          f"--score-spec {flag} differs from session_objective.score_spec_ref "
                          f"{ref}",
                          fix="pass the objective's spec, or --allow-score-spec-override with "
                              "--override-reason outside prod")
    return flag, True


def check_cross_session(scenes: ScenesV2, session_id: str, allow: bool, path: str) -> bool:
    """scenes_v2 of another session only with --allow-cross-session; returns whether used."""
    if scenes.session_id == session_id:
        return False
    if not allow:
        raise PolicyError("cross_session_scenes_v2",
                          f"scenes_v2 belongs to session '{scenes.session_id}', this run is "
                          f"session '{session_id}'", path=path,
                          fix="pass --allow-cross-session to reuse it (recovery rerun)")
    return True


def check_partial_flags(scene_ids: tuple[str, ...], base_pack: str | None) -> None:
    """--scene-id and --base-prompt-map-pack come together."""
    if scene_ids and not base_pack:
        raise PolicyError("scene_id_requires_base_pack",
                          "--scene-id needs --base-prompt-map-pack (the other scenes are "
                          "merged from it)", fix="add --base-prompt-map-pack PATH")
    if base_pack and not scene_ids:
        raise PolicyError("base_pack_requires_scene_id",
                          "--base-prompt-map-pack is only used with --scene-id",
                          fix="name the scenes to regenerate with --scene-id, or drop the pack")


def check_scene_ids(scene_ids: tuple[str, ...], known: list[str], path: str) -> None:
    """Every --scene-id is a scene of scenes_v2."""
    for sid in scene_ids:
        if sid not in known:
            shown = ", ".join(known[:8]) + (" ..." if len(known) > 8 else "")
            raise PolicyError("unknown_scene_id", f"--scene-id '{sid}' is not a scene of "
                              "scenes_v2", path=path, fix=f"known: {shown}")


def check_base_pack(pack: PromptMapPack, si: SessionInput, obj: SessionObjective,
                    scene_order: list[str], scene_ids: tuple[str, ...], path: str) -> None:
    """The base pack is of this session, objective and style preset, and covers the rest."""
    for field, want in (("session_id", si.session_id), ("objective_id", si.objective_id)):
        got = getattr(pack, field)
        if got != want:
            raise PolicyError("base_pack_identity", f"base pack {field} '{got}' differs from "
                              f"this run's '{want}'", path=path,
                              fix="use a prompt_map_pack.json of this session")
    if pack.style_preset != obj.style_preset:
        which = ("id" if pack.style_preset.id != obj.style_preset.id else "definition")
        raise PolicyError("base_pack_identity",
                          f"base pack style_preset '{pack.style_preset.id}' differs from the "
                          f"objective's '{obj.style_preset.id}' ({which})", path=path,
                          fix="regenerate every scene with a full run")
    in_pack = {s.scene_id for s in pack.scenes}
    missing = [sid for sid in scene_order if sid not in scene_ids and sid not in in_pack]
    if missing:
        raise PolicyError("base_pack_coverage",
                          f"scene '{missing[0]}' is not in the base pack, so it cannot be "
                          "merged unchanged", path=path,
                          fix=f"add --scene-id {missing[0]}, or run the whole session")

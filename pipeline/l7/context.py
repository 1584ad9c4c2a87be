"""Stage 2, scene context packaging: what a scene's prompt needs, and its neighbours.

The context holds only the scene itself (plus the session's style and the look and
wardrobe of its cast), never its neighbours, so editing one scene changes one context:
only that scene's candidates are generated again. Neighbours live in a file of their own
that only the continuity stages read.
"""

from __future__ import annotations

from pipeline.core.errors import UserError

from .session import Session


def scene_context(session: Session, sid: str) -> dict:
    """The context of scene ``sid``: scene facts, cast with look and wardrobe, style."""
    scene = session.scenes[sid]
    cast = []
    for cid in scene.characters:
        char = session.characters.get(cid)
        if char is None:  # Gate-In reports it first; this guards a direct task run
            raise UserError(f"scene '{sid}' names unknown character '{cid}'",
                            path=session.cfg.scenes_v2, field=f"scenes.{sid}.characters")
        cast.append({"id": cid, "name": char.name, "look": char.look,
                     "wardrobe": scene.wardrobe.get(cid, char.wardrobe)})
    return {
        "session_title": session.session_input.title,
        "scene": {"scene_id": sid, "title": scene.title, "action": scene.action.rstrip(". "),
                  "mood": scene.mood, "location": scene.setting.location,
                  "time_of_day": scene.setting.time_of_day, "weather": scene.setting.weather},
        "cast": cast,
        "style": session.objective.style_preset.model_dump(),
    }


def neighbours(session: Session, sid: str) -> dict:
    """The scenes before and after ``sid`` in session order (None at the ends)."""
    order = session.order
    i = order.index(sid)
    return {"scene_id": sid, "prev": order[i - 1] if i > 0 else None,
            "next": order[i + 1] if i + 1 < len(order) else None}


def scene_slice(session: Session, sid: str) -> dict:
    """Scene ``sid``'s slice of ``scenes_v2.json``: all its context is made from (with the
    session input and objective), so a scene's context task depends on it and not on the
    whole file: editing one scene reruns one context."""
    scene = session.scenes[sid]
    chars = session.characters
    return {"scene": scene.model_dump(mode="json"),
            "cast": [chars[c].model_dump(mode="json") for c in scene.characters if c in chars],
            "neighbours": neighbours(session, sid)}


def write_slices(session: Session, task: str) -> dict:
    """Stage ``slices``: every scene's slice, each file rewritten only when it changed
    (an unchanged one keeps its hash and mtime, so its context stays up to date)."""
    from .files import write_if_changed

    written = sum(write_if_changed(session.layout.scene(sid, "slice"), scene_slice(session, sid))
                  for sid in session.order)
    return {"slices_written": written}

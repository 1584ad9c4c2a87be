"""Stage 5, selection: the eligible candidate with the highest weighted score wins.

Ties are broken deterministically (:data:`TIE_BREAK`), and every candidate's entry in the
trace says why it won or lost.
"""

from __future__ import annotations

TIE_BREAK = ("highest weighted score; on a tie, more soft thresholds met; then the earlier "
             "candidate (initial candidates by index, then revisions)")


def _key(ev: dict, position: int) -> tuple:
    return (-round(ev["weighted_score"], 6), -ev["soft_thresholds_met"], position)


def _failed_text(ev: dict) -> str:
    reasons = {c["criterion_id"]: c["reason"] for c in ev["criteria"]}
    parts = []
    for cid in ev["failed_hard_constraints"]:
        if cid == "min_weighted_score":
            parts.append(f"min_weighted_score (weighted score {ev['weighted_score']:.3f})")
        else:
            parts.append(f"{cid} ({reasons.get(cid, 'below threshold')})")
    return "; ".join(parts)


def select(evaluations: list[dict], round_name: str = "initial",
           blocked: dict[str, str] | None = None) -> dict:
    """A selection round (``contracts.SelectionRound``) over ``evaluations`` in order.

    ``blocked`` maps candidate ids to a reason they may not win (continuity findings).
    """
    blocked = blocked or {}
    ordered = sorted(enumerate(evaluations), key=lambda p: _key(p[1], p[0]))
    eligible = [ev for _, ev in ordered if ev["eligible"] and ev["candidate_id"] not in blocked]
    winner = eligible[0] if eligible else None
    ranking = []
    for rank, (_, ev) in enumerate(ordered, start=1):
        cid, score = ev["candidate_id"], ev["weighted_score"]
        ok = ev["eligible"] and cid not in blocked
        if winner is not None and cid == winner["candidate_id"]:
            reason = (f"won: highest weighted score {score:.3f} among {len(eligible)} eligible "
                      f"candidate(s)")
            if len(eligible) > 1 and round(eligible[1]["weighted_score"], 6) == round(score, 6):
                reason += "; tie broken by " + (
                    "more soft thresholds met"
                    if eligible[1]["soft_thresholds_met"] < ev["soft_thresholds_met"]
                    else "candidate order")
        elif not ev["eligible"]:
            reason = f"lost: failed hard constraint(s): {_failed_text(ev)}"
        elif cid in blocked:
            reason = f"lost: {blocked[cid]}"
        else:
            assert winner is not None
            best = winner["weighted_score"]
            if round(score, 6) < round(best, 6):
                reason = f"lost: weighted score {score:.3f} below the winner's {best:.3f}"
            elif ev["soft_thresholds_met"] < winner["soft_thresholds_met"]:
                reason = (f"lost: tie at {score:.3f}; the winner meets more soft thresholds "
                          f"({winner['soft_thresholds_met']} vs {ev['soft_thresholds_met']})")
            else:
                reason = f"lost: tie at {score:.3f}; the winner comes first in candidate order"
        ranking.append({"candidate_id": cid, "rank": rank, "weighted_score": score,
                        "eligible": ok, "outcome": "won" if winner is ev else "lost",
                        "reason": reason})
    return {"round": round_name, "status": "selected" if winner else "rejected",
            "winner": winner["candidate_id"] if winner else None, "ranking": ranking}


def view(candidate: dict | None, evaluation: dict | None) -> dict | None:
    """What later stages need of a selected candidate (None for a rejected scene)."""
    if candidate is None or evaluation is None:
        return None
    return {"candidate_id": candidate["candidate_id"], "draft": candidate["draft"],
            "prompt": candidate["prompt"], "negative_prompt": candidate["negative_prompt"],
            "generation": candidate["generation"],
            "weighted_score": evaluation["weighted_score"],
            "hard_constraints_passed": evaluation["hard_constraints_passed"]}

"""Calling a VLM judge safely and turning its verdicts into a keep/drop decision.

A judge is any callable ``judge(list_of_rgb_patches) -> list[dict]`` returning, per patch,
``{"status": ..., "artifact": bool | None, "reason": str}`` (the lead's VLM client,
:mod:`curation.vlm`, provides them; tests pass plain functions). ``status ==
"judge_failed"`` (or a missing ``artifact``) means the patch could not be judged: it counts as
flagged *and* the whole check fails with decision ``judge_failed`` - a failed judgement is
never a pass. A judge that raises, or returns the wrong number of verdicts, fails every patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curation.reasons import JUDGE_FAILED

Judge = Callable[[list[np.ndarray]], list[dict]]


def normalise_verdict(v: Any) -> dict:
    """One verdict as ``{"status", "artifact", "reason"}``; a bare bool is ``artifact``."""
    if isinstance(v, (bool, np.bool_)):
        return {"status": "ok", "artifact": bool(v), "reason": ""}
    if not isinstance(v, dict):
        return {"status": JUDGE_FAILED, "artifact": None, "reason": f"verdict is not a dict: {v!r}"[:200]}
    status = str(v.get("status") or "ok")
    artifact = v.get("artifact")
    if status != JUDGE_FAILED and not isinstance(artifact, (bool, np.bool_)):
        return {**v, "status": JUDGE_FAILED, "artifact": None,
                "reason": f"no boolean 'artifact' in verdict ({v.get('reason', '')})"[:300]}
    return {**v, "status": status, "artifact": None if status == JUDGE_FAILED else bool(artifact),
            "reason": str(v.get("reason", ""))}


def run_judge(judge: Judge, patches: list[np.ndarray]) -> list[dict]:
    """Call ``judge`` once on all patches; exceptions and wrong lengths become ``judge_failed``."""
    if not patches:
        return []
    try:
        out = list(judge(patches))
    except Exception as exc:  # the judge's own failure is recorded, never raised past the check
        return [{"status": JUDGE_FAILED, "artifact": None, "reason": f"{type(exc).__name__}: {exc}"[:300]}
                for _ in patches]
    if len(out) != len(patches):
        return [{"status": JUDGE_FAILED, "artifact": None,
                 "reason": f"judge returned {len(out)} verdicts for {len(patches)} patches"} for _ in patches]
    return [normalise_verdict(v) for v in out]


def decide(verdicts: Sequence[Any], max_flagged: int) -> dict:
    """Keep iff no judgement failed and at most ``max_flagged`` patches show an artifact."""
    vs = [normalise_verdict(v) for v in verdicts]
    n_failed = sum(v["status"] == JUDGE_FAILED for v in vs)
    n_artifact = sum(bool(v["artifact"]) for v in vs)
    n_flagged = n_failed + n_artifact
    if n_failed:
        # the errors themselves (endpoint down, unparseable answer ...), each distinct one once
        why = list(dict.fromkeys(str(v.get("reason") or "no reason given") for v in vs if v["status"] == JUDGE_FAILED))
        decision, reason = JUDGE_FAILED, f"{n_failed} of {len(vs)} judgements failed: {'; '.join(why[:3])}"[:500]
    elif n_flagged > max_flagged:
        decision, reason = "fail", f"{n_flagged} flagged > {max_flagged} allowed"
    else:
        decision, reason = "pass", f"{n_flagged} flagged <= {max_flagged} allowed"
    return {"passed": decision == "pass", "decision": decision, "reason": reason, "n_patches": len(vs),
            "n_flagged": n_flagged, "n_artifact": n_artifact, "n_judge_failed": n_failed,
            "max_flagged": max_flagged}

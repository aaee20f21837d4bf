"""Instance-level artifact assessment (paper 3.1.4): the hook.

The instance crops (per key instance: a crop with 5 % padding, paper 3.1.5) are produced by
the captions stage, which is not built yet. This function takes them when they exist and
judges them with the same judge callable as the region check; the image is dropped if *any*
instance is flagged (``max_flagged = 0``), and a failed judgement fails the check. Without
crops it returns ``status = "not_applied"`` with the reason, and ``passed = None`` (neither a
pass nor a fail: the corpus asset records it and re-runs when the crops arrive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curation.final_filters.judging import Judge, decide, run_judge

MAX_FLAGGED = 0
NOT_APPLIED = "not_applied"
NO_CROPS_REASON = "no instance crops yet: they come from the captions stage (paper 3.1.5)"


def check_instances(crops: Sequence[np.ndarray] | None, judge: Judge | None = None,
                    max_flagged: int = MAX_FLAGGED, instance_ids: Sequence[str] | None = None) -> dict:
    """Judge instance crops; ``not_applied`` when there are none (or no judge)."""
    if not crops:
        return {"status": NOT_APPLIED, "passed": None, "reason": NO_CROPS_REASON, "n_instances": 0}
    if judge is None:
        return {"status": NOT_APPLIED, "passed": None, "reason": "no judge configured", "n_instances": len(crops)}
    verdicts = run_judge(judge, [np.ascontiguousarray(c) for c in crops])
    out = decide(verdicts, max_flagged)
    ids = list(instance_ids) if instance_ids is not None else [str(i) for i in range(len(crops))]
    out.update(status="applied", n_instances=len(crops),
               instances=[{"instance_id": i, **v} for i, v in zip(ids, verdicts)])
    return out

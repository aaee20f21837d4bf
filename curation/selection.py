"""Relative cuts of section 3.1.2 (map/reduce over shards) and the candidate decision.

*Content richness*: keep the images whose entropy ranks in the top 60 % of the raw pool.
*Aesthetics*: keep an image if its LAION score S_L **or** its ArtiMuse score S_A ranks in
the top 60 % of the raw pool. With one scorer available the cut uses it alone; with none,
the criterion is not applied (it rejects no one) and the reason is recorded.

Top fraction f of N scores: keep ``k = ceil(f * N)``; the threshold is the k-th highest
score and every score ``>= threshold`` is kept, so ties at the threshold value are kept
(more than k may pass). The pool is the raw pool's screened images that decoded (an
unreadable image has no score and is not counted in N).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from curation import reasons


def top_fraction_threshold(scores, fraction: float) -> float | None:
    """Value of the ceil(fraction*N)-th highest finite score; None for an empty pool."""
    arr = np.asarray([s for s in scores if s is not None and np.isfinite(s)], dtype=np.float64)
    if arr.size == 0:
        return None
    k = math.ceil(fraction * arr.size)
    k = min(max(k, 1), arr.size)
    # k-th highest = element at index N-k of the ascending order
    return float(np.partition(arr, arr.size - k)[arr.size - k])


def streaming_top_fraction_thresholds(chunks: Callable[[], Iterable[Mapping[str, np.ndarray]]],
                                      fractions: Mapping[str, float], cap: int = 1 << 16,
                                      bins: int = 1 << 12) -> dict[str, float | None]:
    """:func:`top_fraction_threshold` of several score columns, exactly, in memory bounded by
    ``cap`` + ``bins`` values per column whatever the pool size: the global reduce streams shard
    by shard.

    ``chunks()`` starts a new pass over the pool: an iterable of ``{column: float array}`` (one
    shard at a time; NaN/inf are not scores). The selection narrows an interval that holds the
    k-th highest value (k = ceil(fraction * N), N the finite values): pass 1 counts and bounds,
    then each pass histograms the values inside the interval into ``bins`` equal bins and keeps
    the bin holding rank k (its exact min and max become the interval, the values above it are
    counted), until the interval holds at most ``cap`` values (then they are sorted) or one value.
    Three passes for a million uniform scores; a pass reads only these columns.
    """
    cols = list(fractions)
    n = dict.fromkeys(cols, 0)
    lo = dict.fromkeys(cols, math.inf)
    hi = dict.fromkeys(cols, -math.inf)
    for ch in chunks():
        for c in cols:
            v = np.asarray(ch[c], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                n[c] += int(v.size)
                lo[c] = min(lo[c], float(v.min()))
                hi[c] = max(hi[c], float(v.max()))
    out: dict[str, float | None] = {}
    # per open column: [k (rank from the top, 1-based, within the interval), lo, hi, values inside]
    state: dict[str, list] = {}
    for c in cols:
        if n[c] == 0:
            out[c] = None
            continue
        k = min(max(math.ceil(fractions[c] * n[c]), 1), n[c])
        if lo[c] == hi[c]:
            out[c] = lo[c]
        else:
            state[c] = [k, lo[c], hi[c], n[c]]
    while state:
        counts = {c: np.zeros(bins, np.int64) for c, st in state.items() if st[3] > cap}
        bmin = {c: np.full(bins, np.inf) for c in counts}
        bmax = {c: np.full(bins, -np.inf) for c in counts}
        kept: dict[str, list[np.ndarray]] = {c: [] for c in state if c not in counts}
        for ch in chunks():
            for c, (k, a, b, _) in state.items():
                v = np.asarray(ch[c], dtype=np.float64)
                v = v[(v >= a) & (v <= b)]  # NaN compares False: out
                if not v.size:
                    continue
                if c in kept:
                    kept[c].append(v)
                    continue
                i = np.minimum(((v - a) / (b - a) * bins).astype(np.int64), bins - 1)
                counts[c] += np.bincount(i, minlength=bins)
                np.minimum.at(bmin[c], i, v)
                np.maximum.at(bmax[c], i, v)
        for c in list(state):
            k = state[c][0]
            if c in kept:
                vals = np.sort(np.concatenate(kept[c]))
                out[c] = float(vals[vals.size - k])
                del state[c]
                continue
            above = np.cumsum(counts[c][::-1])  # values in the top j+1 bins
            j = int(np.searchsorted(above, k))  # first j with above[j] >= k
            g = bins - 1 - j
            k_in = k - (int(above[j - 1]) if j else 0)
            if bmin[c][g] == bmax[c][g]:
                out[c] = float(bmin[c][g])
                del state[c]
            else:
                state[c] = [k_in, float(bmin[c][g]), float(bmax[c][g]), int(counts[c][g])]
    return out


@dataclass
class Thresholds:
    """Global thresholds over all shards; ``version`` is a content hash of everything here."""

    entropy: float | None
    laion: float | None
    artimuse: float | None
    n_pool: int
    n_laion: int
    n_artimuse: int
    keep_fraction_entropy: float
    keep_fraction_aesthetics: float
    aesthetics_applied: bool
    aesthetics_note: str
    shards: list[str] = field(default_factory=list)
    inputs_digest: str = ""
    version: str = ""

    def finalise(self) -> "Thresholds":
        d = asdict(self)
        d.pop("version")
        self.version = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Thresholds":
        return cls(**json.loads(text))


def compute_thresholds(
    entropy: list,
    laion: list,
    artimuse: list,
    keep_entropy: float,
    keep_aesthetics: float,
    unavailable: dict[str, str] | None = None,
    shards: list[str] | None = None,
    inputs_digest: str = "",
) -> Thresholds:
    """Reduce step. Score lists cover the whole pool (None where a scorer gave no value)."""
    laion_vals = [v for v in laion if v is not None]
    art_vals = [v for v in artimuse if v is not None]
    return assemble_thresholds(
        top_fraction_threshold(entropy, keep_entropy),
        top_fraction_threshold(laion_vals, keep_aesthetics) if laion_vals else None,
        top_fraction_threshold(art_vals, keep_aesthetics) if art_vals else None,
        len([v for v in entropy if v is not None]), len(laion_vals), len(art_vals),
        keep_entropy, keep_aesthetics, unavailable, shards, inputs_digest)


def assemble_thresholds(t_entropy: float | None, t_laion: float | None, t_artimuse: float | None,
                        n_pool: int, n_laion: int, n_artimuse: int, keep_entropy: float, keep_aesthetics: float,
                        unavailable: dict[str, str] | None = None, shards: list[str] | None = None,
                        inputs_digest: str = "") -> Thresholds:
    """The :class:`Thresholds` of computed cut values and pool counts (``n_*``: non-null scores)."""
    unavailable = unavailable or {}
    t_l, t_a = t_laion, t_artimuse
    applied = t_l is not None or t_a is not None
    notes = []
    for name, t in (("laion", t_l), ("artimuse", t_a)):
        if t is None:
            notes.append(f"{name}: not available ({unavailable.get(name, 'no scores')})")
    if not applied:
        note = "aesthetics criterion not applied (rejects no one): " + "; ".join(notes)
    elif notes:
        note = "aesthetics cut uses the available scorer alone; " + "; ".join(notes)
    else:
        note = "aesthetics cut: S_L or S_A in the top fraction"
    return Thresholds(
        entropy=t_entropy,
        laion=t_l,
        artimuse=t_a,
        n_pool=n_pool,
        n_laion=n_laion,
        n_artimuse=n_artimuse,
        keep_fraction_entropy=keep_entropy,
        keep_fraction_aesthetics=keep_aesthetics,
        aesthetics_applied=applied,
        aesthetics_note=note,
        shards=sorted(shards or []),
        inputs_digest=inputs_digest,
    ).finalise()


def aesthetic_pass(s_l, s_a, th: Thresholds) -> bool | None:
    """OR of the available scorers; None when the criterion is not applied."""
    if not th.aesthetics_applied:
        return None
    ok = False
    if th.laion is not None and s_l is not None and s_l >= th.laion:
        ok = True
    if th.artimuse is not None and s_a is not None and s_a >= th.artimuse:
        ok = True
    return ok


def decide_candidate(row: dict, th: Thresholds) -> dict:
    """Apply all five detections to one scored row; returns the candidate-pool fields.

    ``reject_reason`` is the first failing criterion in the order: decode error,
    over_or_under_exposed, blurred, flat, low_entropy, low_aesthetics; ``reject_reasons``
    lists every failing criterion (each detection decides on its own).
    """
    failing: list[str] = []
    if row.get("reject_reason"):
        failing.append(row["reject_reason"])
        rich = aest = None
    else:
        if row.get("pass_exposure") is False:
            failing.append(reasons.OVER_OR_UNDER_EXPOSED)
        if row.get("pass_sharpness") is False:
            failing.append(reasons.BLURRED)
        if row.get("pass_flatness") is False:
            failing.append(reasons.FLAT)
        rich = th.entropy is not None and row.get("entropy") is not None and row["entropy"] >= th.entropy
        if not rich:
            failing.append(reasons.LOW_ENTROPY)
        aest = aesthetic_pass(row.get("laion_score"), row.get("artimuse_score"), th)
        if aest is False:
            failing.append(reasons.LOW_AESTHETICS)
    return {
        "pass_richness": rich,
        "pass_aesthetics": aest,
        "aesthetics_applied": th.aesthetics_applied,
        "passed": not failing,
        "reject_reason": failing[0] if failing else None,
        "reject_reasons": ",".join(failing) if failing else None,
        "entropy_threshold": th.entropy,
        "laion_threshold": th.laion,
        "artimuse_threshold": th.artimuse,
        "threshold_version": th.version,
    }

"""Aesthetic scorers for the purification cut of section 3.1.2 (S_L: LAION, S_A: ArtiMuse).

    from curation.aesthetics import create_scorer
    scorer = create_scorer("laion", cfg.get("purification.aesthetics.laion"))
    ok, reason = scorer.availability()
    if ok:
        s_l = scorer.score(thumbnails)   # float64 (N,)
        version = scorer.version        # record next to the scores

Importing this package registers every scorer in :data:`SCORERS`. Nothing heavy (torch,
transformers) is imported until a scorer loads its model.
"""

from curation.aesthetics.base import SCORERS, AestheticScorer, ScorerUnavailableError, create_scorer
from curation.aesthetics.laion import LaionAestheticScorer
from curation.aesthetics.artimuse import ArtiMuseScorer

__all__ = [
    "SCORERS",
    "AestheticScorer",
    "ArtiMuseScorer",
    "LaionAestheticScorer",
    "ScorerUnavailableError",
    "create_scorer",
]

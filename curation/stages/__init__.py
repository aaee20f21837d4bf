"""The stages of the corpus pipeline: the stage table, fingerprints, and the stage functions.

* :mod:`curation.stages.table`        one :class:`StageSpec` per stage (:data:`STAGES`)
* :mod:`curation.stages.fingerprint`  per-stage fingerprints, input keys, data versions
* :mod:`curation.stages.purification` raw_pool, image_scores, purification_thresholds, candidate_pool
* :mod:`curation.corpus`              corpus_100mp (tiered SR + final filters)
"""

from curation.stages.fingerprint import fingerprints, snapshot_config, stage_fingerprint
from curation.stages.purification import (StageError, StageResult, code_version, load_thresholds,
                                          run_candidate_pool, run_image_scores, run_raw_pool, run_thresholds)
from curation.stages.table import STAGES, StageSpec, StageTable, register_stage, stage


class _CodeVersions:
    """Read-only ``{stage: code_version}`` view of the stage table (for callers that want a mapping)."""

    def __getitem__(self, name: str) -> str:
        return STAGES[name].code_version

    def items(self):
        return [(s.name, s.code_version) for s in STAGES]

    def keys(self):
        return list(STAGES.names())

    def __iter__(self):
        return iter(STAGES.names())

    def __contains__(self, name) -> bool:
        return name in STAGES


CODE_VERSIONS = _CodeVersions()

__all__ = [
    "CODE_VERSIONS", "STAGES", "StageError", "StageResult", "StageSpec", "StageTable", "code_version",
    "fingerprints", "load_thresholds", "register_stage", "run_candidate_pool", "run_image_scores",
    "run_raw_pool", "run_thresholds", "snapshot_config", "stage", "stage_fingerprint",
]

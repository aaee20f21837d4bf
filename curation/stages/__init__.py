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


__all__ = [
    "STAGES", "StageError", "StageResult", "StageSpec", "StageTable", "code_version",
    "fingerprints", "load_thresholds", "register_stage", "run_candidate_pool", "run_image_scores",
    "run_raw_pool", "run_thresholds", "snapshot_config", "stage", "stage_fingerprint",
]

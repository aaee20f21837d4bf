"""Synthetic, labelled raw pool: procedural "photos" plus injected defects (``uhr make-raw-pool``).

Every file is procedurally generated, so a pool of any size can be made on any machine and
every filter's precision and recall is *measured* against ground truth instead of assumed.

Modules:

* :mod:`curation.synth.photos` -- the picture model (luminance, objects, tone, colour, grain),
  the defect scenes and the file encoders; :func:`generate_photo`;
* :mod:`curation.synth.pool` -- the label vocabulary, the plan of a pool, calibration checks,
  shards, ``labels.jsonl`` and licence sidecars; :func:`make_raw_pool`.

``from curation.synth import ...`` is the public path.
"""

from curation.synth.photos import FINE_LEVELS, JPEG_QUALITY, generate_photo
from curation.synth.pool import (
    CLEAN,
    DEFECTS,
    EXPECTED_REASON,
    LICENCES,
    MAX_ATTEMPTS,
    MIN_N,
    NO_SIDECAR_FRACTION,
    ORIGIN,
    PLAIN,
    VARIANTS,
    make_raw_pool,
)

__all__ = [
    "CLEAN", "DEFECTS", "EXPECTED_REASON", "PLAIN", "VARIANTS", "LICENCES", "NO_SIDECAR_FRACTION", "ORIGIN",
    "JPEG_QUALITY", "MIN_N", "MAX_ATTEMPTS", "FINE_LEVELS", "generate_photo", "make_raw_pool",
]

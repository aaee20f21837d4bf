"""The captions pipeline library (paper 3.1.5). No Dagster, no bench imports.

Modules:

* :mod:`~curation.captioning.config` -- :data:`DEFAULTS`, every parameter with its paper
  section or "not in paper" (the future ``captions:`` section of ``configs/paper.yaml``);
* :mod:`~curation.captioning.geometry` -- boxes, mask IoU, NMS, the area filter, the 5 %-padded
  instance crop and the highlighted full image, all from region reads of the tiled file;
* :mod:`~curation.captioning.rle` -- COCO RLE (pycocotools) and the streamed encoder of a
  full-resolution mask from a low-resolution one;
* :mod:`~curation.captioning.answers` -- garbage-proof parsers of every step's answer;
* :mod:`~curation.captioning.tasks` -- the captions tasks in the VLM task registry (imported
  here, so ``import curation.captioning`` registers them) with offline heuristic answers;
* :mod:`~curation.captioning.structures`, :mod:`~curation.captioning.heuristic`,
  :mod:`~curation.captioning.backends` -- tagger / grounder / segmenter interfaces, the offline
  colour-region backends and the SAM 2, OWLv2 and HTTP (RAM++, Rex-Omni) adapters;
* :mod:`~curation.captioning.record` -- the per-image :class:`CaptionRecord` with per-field
  provenance, JSON round trip and caption-quality measures;
* :mod:`~curation.captioning.pipeline` -- :func:`caption_image`, one image end to end.
"""

from curation.captioning import tasks  # noqa: F401  (registers the captions tasks)
from curation.captioning.answers import AESTHETIC_DIMENSIONS, FAILED, OK, Parsed
from curation.captioning.backends import GROUNDERS, SEGMENTERS, TAGGERS
from curation.captioning.config import DEFAULTS, resolve
from curation.captioning.pipeline import caption_image
from curation.captioning.record import CaptionRecord, Instance, Provenance, caption_quality
from curation.captioning.structures import BackendOutputError, Detection, MaskResult, Tag

__all__ = [
    "AESTHETIC_DIMENSIONS", "DEFAULTS", "FAILED", "GROUNDERS", "OK", "SEGMENTERS", "TAGGERS", "BackendOutputError",
    "CaptionRecord", "Detection", "Instance", "MaskResult", "Parsed", "Provenance", "Tag", "caption_image",
    "caption_quality", "resolve",
]

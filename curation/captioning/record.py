"""The per-image caption record and the caption-quality measures.

A :class:`CaptionRecord` holds everything the captions pipeline (paper 3.1.5) produced for one
image -- tags, tangible tags, instances (box, COCO RLE mask, area, description, importance,
artifact verdict), the six-dimension aesthetics analysis, the long and the short caption --
and, **per field**, its :class:`Provenance` (backend, model, prompt hash, status, reason), so a
heuristic or failed value is never mistaken for a model's. ``to_json`` / ``from_json`` round-
trip it exactly (plain JSON: RLE counts are strings).

:func:`caption_quality` measures a record without any model:

* ``instance_coverage`` -- share of the described instances whose description is reflected in
  the long caption: the head word of the instance label (its last word) occurs in the caption,
  or at least ``min_overlap`` (default 0.3) of the description's content words do;
* ``noun_match`` -- share of the long caption's object nouns that match a tag or an instance
  label word. "Object nouns" are approximated by simple tokenisation, not a parser: lower-case
  alphabetic tokens of >= 3 letters, minus stop words, colour / size / light adjectives and
  words ending in ``-ly``, ``-ing``, ``-ed``, ``-ous``, ``-ful``, ``-ive``, ``-al``; plurals are
  folded by stripping a final ``s``. A crude but deterministic proxy;
* ``long_words``, ``short_words`` -- word counts (Table 2 reports 234.1 words on average for
  the long captions).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from curation.captioning.answers import word_count

SCHEMA_VERSION = 1


@dataclass
class Provenance:
    """Who produced a field: ``backend`` (``heuristic``, ``vllm``, ``sam2``, ``http`` ...),
    ``model``, ``prompt_hash`` (sha256 of the prompt file, model calls only), ``status``
    (``ok`` / ``failed`` / ``skipped``) and the ``reason`` of a failure."""

    backend: str
    model: str
    prompt_hash: str | None = None
    status: str = "ok"
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Instance:
    """One key instance. ``box`` and ``crop_box`` are ``(x0, y0, x1, y1)`` full-image pixels
    (exclusive ends; ``box`` is the tight box of the mask); ``mask_rle`` the COCO RLE at full
    resolution; ``area`` its pixel count; ``score`` the grounding score."""

    instance_id: str
    label: str
    box: list[int]
    mask_rle: dict
    area: int
    score: float
    crop_box: list[int] | None = None
    mask_score: float | None = None
    description: str | None = None
    importance: int | None = None
    artifact: dict | None = None
    provenance: dict[str, Provenance] = field(default_factory=dict)


@dataclass
class CaptionRecord:
    image_id: str
    width: int
    height: int
    tags: list[dict] = field(default_factory=list)          # [{"label", "score"}] from the tagger
    tangible_tags: list[str] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    aesthetics_analysis: dict | None = None
    long_caption: str | None = None
    short_caption: str | None = None
    provenance: dict[str, Provenance] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def failures(self) -> dict[str, str]:
        """``{field: reason}`` of every step that did not succeed (instance steps as
        ``instances[i].<step>``)."""
        out = {k: p.reason or p.status for k, p in self.provenance.items() if p.status != "ok"}
        for i, inst in enumerate(self.instances):
            out.update({f"instances[{i}].{k}": p.reason or p.status for k, p in inst.provenance.items() if p.status != "ok"})
        return out

    @property
    def complete(self) -> bool:
        """Both captions present and no failed step."""
        return bool(self.long_caption) and bool(self.short_caption) and not self.failures

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, **kw)

    @classmethod
    def from_dict(cls, d: dict) -> CaptionRecord:
        d = dict(d)
        if int(d.get("schema_version", SCHEMA_VERSION)) != SCHEMA_VERSION:
            raise ValueError(f"caption record schema {d.get('schema_version')} != {SCHEMA_VERSION}")
        prov = {k: Provenance(**v) for k, v in (d.pop("provenance", None) or {}).items()}
        insts = []
        for i in d.pop("instances", None) or []:
            i = dict(i)
            ip = {k: Provenance(**v) for k, v in (i.pop("provenance", None) or {}).items()}
            insts.append(Instance(**i, provenance=ip))
        return cls(**d, instances=insts, provenance=prov)

    @classmethod
    def from_json(cls, text: str) -> CaptionRecord:
        return cls.from_dict(json.loads(text))


# =============================================================================================
# quality
# =============================================================================================
_TOKEN = re.compile(r"[a-z]+")
STOP = frozenset("""a an the and or but of in on at to from by for with without into onto over under above below
between behind beside near its it this that these those there their they them his her he she we you i is are was were
be been being has have had do does did not no nor as than then so such very more most less least some any each every
all both few many much one two three four five several other another which who whom whose what when where while how
also just only about across along around against among through during before after up down out off again further
once here same own can will would could should may might must shall appears appear seems seem shows show image
picture photo photograph scene frame view""".split())
ADJECTIVES = frozenset("""red orange yellow green teal blue purple pink brown black white grey gray golden silver dark
bright light pale deep vivid soft hard small large big tiny huge tall short long wide narrow left right top bottom
centre center middle upper lower front back smooth rough warm cool cold hot old new young modern ancient clear
sharp blurry blurred natural overall main background foreground visible detailed fine rich subtle strong gentle
heuristic mostly about level""".split())
_ADJ_SUFFIX = ("ly", "ing", "ed", "ous", "ful", "ive", "al")


def _fold(w: str) -> str:
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def content_words(text: str) -> list[str]:
    return [_fold(w) for w in _TOKEN.findall((text or "").lower()) if len(w) >= 3 and w not in STOP]


def object_nouns(text: str) -> list[str]:
    """The caption's object-noun candidates (see the module doc for the approximation)."""
    return [w for w in content_words(text) if w not in ADJECTIVES and not w.endswith(_ADJ_SUFFIX)]


def description_reflected(description: str, label: str, caption: str, min_overlap: float = 0.3) -> bool:
    cap = set(content_words(caption))
    head = content_words(label)[-1:] if label else []
    if head and head[0] in cap:
        return True
    desc = set(content_words(description))
    return bool(desc) and len(desc & cap) / len(desc) >= min_overlap


def caption_quality(record: CaptionRecord, min_overlap: float = 0.3) -> dict:
    """The quality measures of one record (``None`` where a caption is missing)."""
    long = record.long_caption or ""
    described = [i for i in record.instances if i.description]
    if long and described:
        cov = sum(description_reflected(i.description or "", i.label, long, min_overlap) for i in described) / len(described)
    else:
        cov = None
    vocab = set()
    for t in list(record.tangible_tags) + [t.get("label", "") for t in record.tags if isinstance(t, dict)] + \
            [i.label for i in record.instances]:
        vocab.update(content_words(t))
    nouns = object_nouns(long)
    match = (sum(n in vocab for n in nouns) / len(nouns)) if nouns else None
    return {
        "instance_coverage": cov,
        "n_instances_described": len(described),
        "noun_match": match,
        "n_object_nouns": len(nouns),
        "long_words": word_count(long) if record.long_caption else None,
        "short_words": word_count(record.short_caption or "") if record.short_caption else None,
    }

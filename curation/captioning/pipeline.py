"""One image through the captions pipeline (paper 3.1.5), as a library function.

:func:`caption_image` runs, for one image of the tiled 100 MP corpus:

1. the **views**: the whole image downscaled once (band-wise region reads, from the file's
   coarsest stored level that is large enough when it has levels) to the largest of
   ``analysis_long_edge``, ``highlight.long_edge`` and ``caption_view_long_edge`` (the last two
   also at most ``vlm_max_pixels``: images the VLM gets), the others reduced from it; the
   tagger, grounder and segmenter see only the analysis view;
2. **tags** (tagger) -> **tangible tags** (LLM task ``caption_tag_pruning``; tags the LLM
   invents fail the step) -> **boxes** (grounder, ``box_threshold``) -> **masks** (segmenter,
   one box prompt each) -> full-resolution COCO RLE from the low-resolution masks
   (:func:`curation.captioning.rle.encode_lowres`, streamed) -> **area filter**
   (``min_area_fraction`` of the image) -> **mask-IoU NMS** (``nms.iou_threshold``, greedy by
   grounding score) -> at most ``max_instances``;
3. per instance, the **visual pair**: the 5 %-padded crop (region read, downscaled to
   ``crop.max_long_edge`` and ``vlm_max_pixels`` if larger -- the pixels the VLM's image
   processor keeps -- from the coarsest stored level that still has them, block means then
   bilinear) and the highlighted full image (``highlight.long_edge``, ``vlm_max_pixels``);
   the VLM task ``caption_instance_description`` (description + importance) and, when
   ``check_artifacts``, the existing ``instance_artifact`` task (paper 3.1.4);
4. the **aesthetics analysis** (``caption_aesthetics_analysis``), the **long caption**
   (``caption_long``, image + all metadata) and the **short caption** (``caption_short``).

Every model call goes through the VLM client (cache keyed by image id, task, model, prompt
hash; crops get :func:`curation.vlm.patch_image_id` ids). A failed step is recorded in the
field's :class:`~curation.captioning.record.Provenance` (``status="failed"`` with the reason);
later steps run on what exists, and :attr:`CaptionRecord.complete` is False. Nothing here
raises for a model's bad output; caller bugs (a bad config key) still raise.

``timings`` (a dict, optional) receives seconds per step (added to what it holds); steps whose
name starts with ``model.`` are backend / model calls, the others (``views``, ``rle_encode``,
``select``, ``crops``, ``highlights``) the pipeline's own overhead, as is the wall time no step
covers (opening the file, building requests, parsing answers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from curation.captioning import answers as A
from curation.captioning import geometry as G
from curation.captioning import rle as R
from curation.captioning import tasks as _tasks  # noqa: F401  (registers the captions tasks)
from curation.captioning.config import resolve
from curation.captioning.record import CaptionRecord, Instance, Provenance
from curation.vlm import VLMRequest, patch_image_id


@contextmanager
def _timed(timings: dict | None, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _backend_prov(backend: Any, status: str = "ok", reason: str | None = None) -> Provenance:
    d = backend.describe() if hasattr(backend, "describe") else {"backend": type(backend).__name__, "model": ""}
    return Provenance(str(d.get("backend", "")), str(d.get("model", "")), None, status, reason)


def _result_prov(res: Any, parsed: A.Parsed | None = None) -> Provenance:
    if not res.ok:
        return Provenance(res.backend, res.model, res.prompt_hash, "failed", res.reason)
    if parsed is not None and not parsed.ok:
        return Provenance(res.backend, res.model, res.prompt_hash, "failed", parsed.reason)
    return Provenance(res.backend, res.model, res.prompt_hash)


def _views(src: Any, sizes: Mapping[str, tuple[int, int]], band: int) -> dict[str, np.ndarray]:
    """The downscaled whole-image views by name, ``sizes[name] = (w, h)`` (each a
    :func:`~curation.captioning.geometry.target_size` of the image): the largest read band-wise
    from the file (from its coarsest stored level that still has that resolution, when it has
    levels), each smaller one reduced from it once per size (:func:`~curation.captioning.geometry.reduce_fast`;
    so the file is read once)."""
    bw, bh = max(sizes.values(), key=lambda s: (s[0] * s[1], s))
    big = G.read_resized(src, (0, 0, int(src.width), int(src.height)), bw, bh, band)
    by_size: dict[tuple[int, int], np.ndarray] = {big.shape[:2]: big}
    out = {}
    for k, (tw, th) in sizes.items():
        if (th, tw) not in by_size:   # block means + bilinear: area resampling costs ~5x more
            by_size[(th, tw)] = G.reduce_fast(big, tw, th)
        out[k] = by_size[(th, tw)]
    return out


def caption_image(image: Any, image_id: str, *, tagger: Any, grounder: Any, segmenter: Any, llm: Any, vlm: Any,
                  params: Mapping[str, Any] | None = None, check_artifacts: bool = True,
                  artifact_judge: Any = None, timings: dict | None = None) -> CaptionRecord:
    """Caption one image (a path to the tiled file, or a region source / array)."""
    from curation.upscale.storage import open_source

    p = resolve(params)
    src = open_source(image) if not hasattr(image, "read") else image
    try:
        return _run(src, image_id, p, tagger, grounder, segmenter, llm, vlm, check_artifacts,
                    artifact_judge or vlm, timings)
    finally:
        if src is not image and hasattr(src, "close"):
            src.close()


def _run(src: Any, image_id: str, p: dict, tagger, grounder, segmenter, llm, vlm, check_artifacts, judge,
         timings) -> CaptionRecord:
    W, H = int(src.width), int(src.height)
    band = int(p["captions.read.band_rows"])
    rec = CaptionRecord(image_id=image_id, width=W, height=H,
                        params={k: v for k, v in p.items() if not k.startswith("captions.models.")})
    vlm_px = int(p["captions.vlm_max_pixels"] or 0) or None   # the VLM's image budget (None: no limit)
    edges = {k: int(p[f"captions.{k}"]) for k in ("analysis_long_edge", "highlight.long_edge", "caption_view_long_edge")}
    sizes = {k: G.target_size(W, H, e, None if k == "analysis_long_edge" else vlm_px) for k, e in edges.items()}
    with _timed(timings, "views"):  # one band-wise pass over the file; smaller views derived from it
        views = _views(src, sizes, band)
    view = views["analysis_long_edge"]
    vh, vw = view.shape[:2]
    sx, sy = W / vw, H / vh

    # -- tags ------------------------------------------------------------------------------
    tags: list = []
    try:
        with _timed(timings, "model.tagger"):
            tags = [t for t in tagger.tag(view) if t.score >= float(p["captions.tagger.min_score"])]
        tags = tags[: int(p["captions.tagger.max_tags"])]
        rec.provenance["tags"] = _backend_prov(tagger) if tags else _backend_prov(tagger, "failed", "no tags")
    except Exception as e:
        rec.provenance["tags"] = _backend_prov(tagger, "failed", f"{type(e).__name__}: {e}")
    rec.tags = [{"label": t.label, "score": float(t.score)} for t in tags]

    # -- tag pruning -------------------------------------------------------------------------
    labels = [t.label for t in tags]
    if labels:
        with _timed(timings, "model.tag_pruning"):
            res = llm.run_one(VLMRequest("caption_tag_pruning", image_id, [], {"tags": labels}))
        parsed = A.parse_tag_pruning(res.answer, labels) if res.ok else None
        rec.provenance["tangible_tags"] = _result_prov(res, parsed)
        if parsed is not None and parsed.ok:
            rec.tangible_tags = parsed.value["tangible_tags"]
    else:
        rec.provenance["tangible_tags"] = Provenance("", "", None, "skipped", "no tags")

    # -- grounding, masks, selection ------------------------------------------------------------
    dets: list = []
    if rec.tangible_tags:
        try:
            with _timed(timings, "model.grounder"):
                dets = [d for d in grounder.ground(view, rec.tangible_tags)
                        if d.score >= float(p["captions.grounder.box_threshold"])]
            rec.provenance["boxes"] = _backend_prov(grounder)
        except Exception as e:
            rec.provenance["boxes"] = _backend_prov(grounder, "failed", f"{type(e).__name__}: {e}")
    masks: list = []
    if dets:
        try:
            with _timed(timings, "model.segmenter"):
                masks = segmenter.segment(view, [d.box for d in dets])
            if len(masks) != len(dets):
                raise ValueError(f"{len(masks)} masks for {len(dets)} boxes")
            rec.provenance["masks"] = _backend_prov(segmenter)
        except Exception as e:
            masks = []
            rec.provenance["masks"] = _backend_prov(segmenter, "failed", f"{type(e).__name__}: {e}")
    cands = []
    unusable = 0
    with _timed(timings, "rle_encode"):
        for d, m in zip(dets, masks):
            try:
                low = np.nan_to_num(np.asarray(m.low, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
                fr = m.scaled(sx, sy).frame
                if G.valid_box(fr) is None or low.ndim != 2 or low.size == 0 or not np.isfinite(float(d.score)):
                    raise ValueError("unusable mask or score")
                r = R.encode_lowres(low, fr, H, W, float(p["captions.segmenter.mask_threshold"]),
                                    int(p["captions.rle.chunk_columns"]))
            except (TypeError, ValueError, AttributeError):
                unusable += 1
                continue
            cands.append((d, m, r, R.area(r)))
    if unusable and "masks" in rec.provenance:
        rec.provenance["masks"].reason = f"{unusable} unusable mask(s) dropped"
    with _timed(timings, "select"):
        keep = G.area_filter([c[3] for c in cands], W * H, float(p["captions.min_area_fraction"]))
        cands = [cands[i] for i in keep]
        iou = R.iou_matrix([c[2] for c in cands])
        kept = G.nms([c[0].score for c in cands], iou, float(p["captions.nms.iou_threshold"]))
        cands = [cands[i] for i in kept][: int(p["captions.max_instances"])]
    for k, (d, m, r, a) in enumerate(cands):
        bb = R.bbox(r)
        rec.instances.append(Instance(
            instance_id=f"{image_id}#{k}", label=d.label, box=list(bb), mask_rle=r, area=int(a), score=float(d.score),
            mask_score=float(m.score),
            provenance={"box": Provenance(d.source, _backend_prov(grounder).model),
                        "mask": Provenance(m.source, _backend_prov(segmenter).model)}))

    # -- visual pairs and instance descriptions ----------------------------------------------------
    hl_edge = edges["highlight.long_edge"]
    thumb = views["highlight.long_edge"]
    with _timed(timings, "highlights"):
        dark = G.dimmed(thumb, float(p["captions.highlight.dim"])) if rec.instances else None
    crops: dict[int, np.ndarray] = {}
    with _timed(timings, "crops"):   # top to bottom, so overlapping crops find their tiles still decoded
        for k in sorted(range(len(rec.instances)), key=lambda k: (rec.instances[k].box[1], rec.instances[k].box[0])):
            crops[k], cb = G.read_crop(src, rec.instances[k].box, float(p["captions.crop.padding"]),
                                       int(p["captions.crop.max_long_edge"]), band, vlm_px, fast=True)
            rec.instances[k].crop_box = list(cb)
    pairs = []
    with _timed(timings, "highlights"):   # one allocation for all of them (page faults, not pixels, cost most)
        hls = np.empty((len(rec.instances),) + thumb.shape, np.uint8)
    for k, inst in enumerate(rec.instances):
        with _timed(timings, "highlights"):
            hl = G.highlight_image(src, inst.mask_rle, hl_edge, float(p["captions.highlight.dim"]),
                                   int(p["captions.highlight.outline_px"]), p["captions.highlight.outline_rgb"],
                                   band, thumbnail=thumb, dark=dark, out=hls[k])
        pairs.append((crops.pop(k), hl))
    reqs = []
    for inst, (crop, hl) in zip(rec.instances, pairs):
        x0, y0, x1, y1 = inst.box
        # the id names the crop's box and the sizes the pair is sent at ("caption-crop<w>x<h>+hl<w>x<h>"; ids
        # before the VLM pixel budget were "caption-crop", so no answer cached for another pair is reused)
        pid = patch_image_id(image_id, (inst.crop_box[0], inst.crop_box[1], inst.crop_box[2] - inst.crop_box[0],
                                        inst.crop_box[3] - inst.crop_box[1]),
                             f"caption-crop{crop.shape[1]}x{crop.shape[0]}+hl{hl.shape[1]}x{hl.shape[0]}")
        reqs.append(VLMRequest("caption_instance_description", pid + f"|{inst.label}", [crop, hl],
                               {"label": inst.label, "box": [round(x0 / W, 4), round(y0 / H, 4), round(x1 / W, 4),
                                                             round(y1 / H, 4)],
                                "area_fraction": round(inst.area / (W * H), 6)}))
    if reqs:
        with _timed(timings, "model.instance_descriptions"):
            results = vlm.run(reqs)
        for inst, res in zip(rec.instances, results):
            parsed = A.parse_instance_description(res.answer, p["captions.importance.min"], p["captions.importance.max"],
                                                  p["captions.description.min_words"]) if res.ok else None
            inst.provenance["description"] = _result_prov(res, parsed)
            if parsed is not None and parsed.ok:
                inst.description = parsed.value["description"]
                inst.importance = parsed.value["importance"]
        if check_artifacts:
            areqs = [VLMRequest("instance_artifact", r.image_id, r.images, {"label": r.variables["label"]}) for r in reqs]
            with _timed(timings, "model.instance_artifacts"):
                results = judge.run(areqs)
            for inst, res in zip(rec.instances, results):
                parsed = A.parse_instance_artifact(res.answer) if res.ok else None
                inst.provenance["artifact"] = _result_prov(res, parsed)
                if parsed is not None and parsed.ok:
                    inst.artifact = parsed.value
    del pairs, hls

    # -- aesthetics analysis, long and short caption ------------------------------------------------
    cview = views["caption_view_long_edge"]
    # the whole image when sent unscaled, else "view<w>x<h>" (ids before the VLM pixel budget were "view<edge>")
    vid = image_id if cview.shape[:2] == (H, W) else \
        patch_image_id(image_id, (0, 0, W, H), f"view{cview.shape[1]}x{cview.shape[0]}")
    with _timed(timings, "model.aesthetics_analysis"):
        res = vlm.run_one(VLMRequest("caption_aesthetics_analysis", vid, [cview]))
    parsed = A.parse_aesthetics_analysis(res.answer) if res.ok else None
    rec.provenance["aesthetics_analysis"] = _result_prov(res, parsed)
    if parsed is not None and parsed.ok:
        rec.aesthetics_analysis = parsed.value

    ranked = sorted((i for i in rec.instances if i.description), key=lambda i: (-(i.importance or 0), i.instance_id))
    meta_instances = [{"label": i.label, "box": [round(i.box[0] / W, 4), round(i.box[1] / H, 4), round(i.box[2] / W, 4),
                                                 round(i.box[3] / H, 4)],
                       "importance": i.importance, "description": i.description} for i in ranked]
    with _timed(timings, "model.long_caption"):
        res = vlm.run_one(VLMRequest("caption_long", vid, [cview], {
            "tags": rec.tangible_tags, "instances": meta_instances,
            "aesthetics": {A.AESTHETIC_DIMENSIONS[k]: v for k, v in (rec.aesthetics_analysis or {}).items()
                           if k in A.AESTHETIC_DIMENSIONS} or "not available"}))
    parsed = A.parse_long_caption(res.answer, p["captions.long_caption.min_words"],
                                  p["captions.long_caption.max_words"]) if res.ok else None
    rec.provenance["long_caption"] = _result_prov(res, parsed)
    if parsed is not None and parsed.ok:
        rec.long_caption = parsed.value["long_caption"]
    if rec.long_caption:
        with _timed(timings, "model.short_caption"):
            res = vlm.run_one(VLMRequest("caption_short", vid, [cview], {"long_caption": rec.long_caption}))
        parsed = A.parse_short_caption(res.answer, p["captions.short_caption.min_words"],
                                       p["captions.short_caption.max_words"]) if res.ok else None
        rec.provenance["short_caption"] = _result_prov(res, parsed)
        if parsed is not None and parsed.ok:
            rec.short_caption = parsed.value["short_caption"]
    else:
        rec.provenance["short_caption"] = Provenance("", "", None, "skipped", "no long caption")
    return rec

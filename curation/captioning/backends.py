"""Tagger, grounder and segmenter backends behind small interfaces, created by name.

Three registries (:class:`curation.registry.Registry`, the project's one registry class):

============== ================= =====================================================================
registry       name              what
============== ================= =====================================================================
TAGGERS        ``heuristic``     colour-region tags (:mod:`curation.captioning.heuristic`), no weights
               ``http``          a RAM++ service: ``POST {url}`` JSON (below); transformers has no RAM++
GROUNDERS      ``heuristic``     boxes of the colour regions carrying each tag
               ``owlv2``         ``transformers.Owlv2ForObjectDetection`` (open-vocabulary detection),
                                 loaded from a path / the local HF cache only
               ``http``          a Rex-Omni service (the paper's grounder; not in transformers)
SEGMENTERS     ``heuristic``     modal-colour component inside each box
               ``sam2``          ``transformers.Sam2Model`` with box prompts, local weights only
============== ================= =====================================================================

Interfaces (all coordinates in pixels of the ``view`` given, see
:mod:`curation.captioning.structures`):

* ``Tagger.tag(view) -> list[Tag]``
* ``Grounder.ground(view, tags) -> list[Detection]``
* ``Segmenter.segment(view, boxes) -> list[MaskResult]`` (one per box, in order)

and ``describe() -> {"backend", "model"}`` (what provenance records) and the classmethod
``availability(**kw) -> Availability`` (imports / weights present, without loading a model).

Model outputs are never trusted: a NaN or infinite score, a box with no area or outside the
view, a mask with NaNs, are dropped (counted in ``backend.dropped``) or zeroed, never passed on.
An unreadable HTTP answer raises :class:`~curation.captioning.structures.BackendOutputError`.

HTTP protocol (``HttpTagger`` / ``HttpGrounder``): request body
``{"image": "data:image/jpeg;base64,...", "width": w, "height": h, ...}`` plus ``"max_tags"``
(tagger) or ``"tags": [...]`` (grounder); answer ``{"tags": [{"label": str, "score": float}
| str, ...]}`` or ``{"detections": [{"label": str, "box": [x0, y0, x1, y1], "score": float},
...]}`` with boxes in the sent image's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curation.captioning.heuristic import HeuristicGrounder, HeuristicSegmenter, HeuristicTagger
from curation.captioning.structures import BackendOutputError, Detection, MaskResult, Tag
from curation.registry import Registry
from curation.upscale.backends import Availability

TAGGERS: Registry = Registry("tagger")
GROUNDERS: Registry = Registry("grounder")
SEGMENTERS: Registry = Registry("segmenter")

TAGGERS.register("heuristic", HeuristicTagger)
GROUNDERS.register("heuristic", HeuristicGrounder)
SEGMENTERS.register("heuristic", HeuristicSegmenter)

#: OWLv2 / CLIP normalisation constants (the image processor's defaults)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _local_model_path(name_or_path: str) -> str | None:
    """A local folder, or the snapshot of a repo id in the local HF cache; None if absent."""
    if name_or_path and Path(name_or_path).is_dir():
        return str(name_or_path)
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name_or_path, "config.json")
        return str(Path(hit).parent) if isinstance(hit, str) else None
    except Exception:
        return None


def _hf_availability(class_name: str, path: str) -> Availability:
    """Available when transformers has ``class_name`` and ``path`` is a local folder or in the HF cache."""
    try:
        import transformers

        getattr(transformers, class_name)
    except Exception as e:
        return Availability(False, f"transformers without {class_name}: {e}")
    if _local_model_path(path) is None:
        return Availability(False, f"no local weights for {path!r}")
    return Availability(True, "")


def _to_tensor(view: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
    """(1, 3, h, w) float tensor of ``view`` resized to ``size = (w, h)`` and normalised."""
    import cv2
    import torch

    a = cv2.resize(np.ascontiguousarray(view), size, interpolation=cv2.INTER_AREA if size[0] < view.shape[1]
                   else cv2.INTER_LINEAR).astype(np.float32) / 255.0
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def _size_of(image_size: Any) -> int:
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0])
    return int(image_size)


# =============================================================================================
# SAM 2 (transformers)
# =============================================================================================
class Sam2Segmenter:
    """SAM 2 with one box prompt per instance (``transformers.Sam2Model``).

    ``model``: a loaded ``Sam2Model`` (tests build one from a tiny config), or ``path``: a local
    folder / repo id already in the HF cache (``local_files_only``; nothing is downloaded).
    The view is resized to the model's square input (``image_size`` of the vision backbone),
    ImageNet-normalised; boxes are scaled to it; the low-resolution mask logits of the single-
    mask output go through a sigmoid and cover the whole view (``frame = (0, 0, w, h)``).
    """

    name = "sam2"

    def __init__(self, model: Any = None, path: str = "facebook/sam2.1-hiera-large", device: str = "cpu",
                 **_: Any) -> None:
        if model is None:
            from transformers import Sam2Model

            local = _local_model_path(path)
            if local is None:
                raise FileNotFoundError(f"sam2: no local weights for {path!r} (folder or HF cache); nothing is downloaded")
            model = Sam2Model.from_pretrained(local, local_files_only=True)
            self.model_name = path
        else:
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", "") or "sam2(in-memory)"
        self.net = model.to(device).eval()
        self.device = device
        self.size = _size_of(model.config.vision_config.backbone_config.image_size)
        self.dropped = 0

    @classmethod
    def availability(cls, path: str = "facebook/sam2.1-hiera-large", **_: Any) -> Availability:
        return _hf_availability("Sam2Model", path)

    def segment(self, view: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[MaskResult]:
        import torch

        from curation.captioning.geometry import valid_box

        h, w = view.shape[:2]
        s = self.size
        if not boxes:
            return []
        ok = [valid_box(b, w, h) for b in boxes]
        prompts = [[v[0] * s / w, v[1] * s / h, v[2] * s / w, v[3] * s / h] if v else [0.0, 0.0, 1.0, 1.0] for v in ok]
        px = _to_tensor(view, (s, s), IMAGENET_MEAN, IMAGENET_STD).to(self.device)
        with torch.no_grad():
            out = self.net(pixel_values=px, input_boxes=torch.tensor([prompts], dtype=torch.float32, device=self.device),
                           multimask_output=False)
        logits = out.pred_masks[0, :, 0].float().cpu().numpy()  # (n, s/4, s/4)
        scores = out.iou_scores[0, :, 0].float().cpu().numpy()
        res = []
        for i, v in enumerate(ok):
            low = logits[i]
            bad = not np.isfinite(low).all()
            sc = _finite(scores[i])
            if v is None or bad or sc is None:
                self.dropped += 1
                res.append(MaskResult(np.zeros((1, 1), np.float32), (0.0, 0.0, float(w), float(h)), 0.0, self.name))
                continue
            prob = (1.0 / (1.0 + np.exp(-np.clip(low, -50, 50)))).astype(np.float32)
            res.append(MaskResult(prob, (0.0, 0.0, float(w), float(h)), float(sc), self.name))
        return res

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name}


# =============================================================================================
# OWLv2 (transformers)
# =============================================================================================
class Owlv2Grounder:
    """Open-vocabulary boxes with ``transformers.Owlv2ForObjectDetection``.

    ``model`` + ``tokenizer`` (tests: a tiny random model and any callable returning
    ``input_ids`` / ``attention_mask`` tensors), or ``path`` (local folder / HF cache; the
    processor's tokenizer is loaded from it). The view is padded to a square at the bottom /
    right with grey 0.5 (as OWLv2's processor does), resized to ``image_size`` and CLIP-
    normalised; per tag, the patches with sigmoid score ``>= box_threshold``, best
    ``max_boxes_per_tag``; boxes (centre, size, relative to the padded square) -> view pixels.
    """

    name = "owlv2"

    def __init__(self, model: Any = None, tokenizer: Callable | None = None, path: str = "google/owlv2-base-patch16-ensemble",
                 box_threshold: float = 0.3, max_boxes_per_tag: int = 5, device: str = "cpu", max_text_len: int = 16,
                 **_: Any) -> None:
        if model is None:
            from transformers import AutoTokenizer, Owlv2ForObjectDetection

            local = _local_model_path(path)
            if local is None:
                raise FileNotFoundError(f"owlv2: no local weights for {path!r} (folder or HF cache); nothing is downloaded")
            model = Owlv2ForObjectDetection.from_pretrained(local, local_files_only=True)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(local, local_files_only=True)
            self.model_name = path
        else:
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", "") or "owlv2(in-memory)"
        if tokenizer is None:
            raise ValueError("owlv2: a tokenizer is needed with an in-memory model")
        self.net = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.size = _size_of(model.config.vision_config.image_size)
        self.box_threshold = float(box_threshold)
        self.max_boxes_per_tag = int(max_boxes_per_tag)
        self.max_text_len = int(max_text_len)
        self.dropped = 0

    @classmethod
    def availability(cls, path: str = "google/owlv2-base-patch16-ensemble", **_: Any) -> Availability:
        return _hf_availability("Owlv2ForObjectDetection", path)

    def ground(self, view: np.ndarray, tags: Sequence[str]) -> list[Detection]:
        import torch

        from curation.captioning.geometry import valid_box

        tags = [t for t in tags if isinstance(t, str) and t.strip()]
        if not tags:
            return []
        h, w = view.shape[:2]
        side = max(h, w)
        sq = np.full((side, side, 3), 128, np.uint8)
        sq[:h, :w] = view
        px = _to_tensor(sq, (self.size, self.size), CLIP_MEAN, CLIP_STD).to(self.device)
        tok = self.tokenizer(list(tags), padding="max_length", truncation=True, max_length=self.max_text_len,
                             return_tensors="pt")
        with torch.no_grad():
            out = self.net(input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device),
                           pixel_values=px)
        scores = torch.sigmoid(out.logits[0].float()).cpu().numpy()  # (patches, tags)
        boxes = out.pred_boxes[0].float().cpu().numpy()               # (patches, 4) cx, cy, bw, bh in [0, 1]
        res: list[Detection] = []
        for j, t in enumerate(tags):
            col = scores[:, j]
            order = np.argsort(-np.nan_to_num(col, nan=-1.0), kind="stable")
            n = 0
            for i in order:
                sc = _finite(col[i])
                if sc is None or sc < self.box_threshold:
                    if sc is None:
                        self.dropped += 1
                    continue
                cx, cy, bw, bh = (float(v) for v in boxes[i])
                vb = valid_box(((cx - bw / 2) * side, (cy - bh / 2) * side, (cx + bw / 2) * side, (cy + bh / 2) * side), w, h, 1.0)
                if vb is None:
                    self.dropped += 1
                    continue
                res.append(Detection(" ".join(t.lower().split()), vb, round(sc, 6), self.name))
                n += 1
                if n >= self.max_boxes_per_tag:
                    break
        return res

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name}


# =============================================================================================
# HTTP services (RAM++, Rex-Omni)
# =============================================================================================
class _HttpModel:
    """``POST`` JSON to ``url`` (with the view as a JPEG data URL); the answer must be JSON."""

    name = "http"

    def __init__(self, url: str, model: str = "", timeout_s: float = 120.0, api_key_env: str | None = None,
                 jpeg_quality: int = 95, transport: Any = None, **_: Any) -> None:
        import httpx

        if not url:
            raise ValueError(f"{type(self).__name__}: a url is needed")
        self.url = str(url)
        self.model_name = model or self.url
        from curation.vlm.client import json_headers

        headers = json_headers(api_key_env, type(self).__name__)
        self._http = httpx.Client(headers=headers, timeout=float(timeout_s), transport=transport, trust_env=False)
        self.jpeg_quality = int(jpeg_quality)
        self.dropped = 0

    @classmethod
    def availability(cls, url: str | None = None, **_: Any) -> Availability:
        return Availability(bool(url), "" if url else "no url configured")

    def _post(self, view: np.ndarray, extra: Mapping[str, Any]) -> dict:
        import httpx

        from curation.vlm.client import image_data_url

        body = {"image": image_data_url(view, "jpeg", self.jpeg_quality), "width": int(view.shape[1]),
                "height": int(view.shape[0]), **extra}
        try:
            r = self._http.post(self.url, json=body)
        except httpx.HTTPError as e:
            raise BackendOutputError(f"{self.name}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise BackendOutputError(f"{self.name}: HTTP {r.status_code}: {(r.text or '')[:200]}")
        try:
            data = r.json()
        except ValueError:
            raise BackendOutputError(f"{self.name}: the answer is not JSON: {(r.text or '')[:120]!r}") from None
        if not isinstance(data, dict):
            raise BackendOutputError(f"{self.name}: the answer is not a JSON object")
        return data

    def close(self) -> None:
        self._http.close()

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name}


class HttpTagger(_HttpModel):
    """RAM++ (or any tagger) behind an HTTP service; see the module doc for the protocol."""

    name = "http"

    def __init__(self, url: str, model: str = "RAM++", max_tags: int = 40, **kw: Any) -> None:
        super().__init__(url, model, **kw)
        self.max_tags = int(max_tags)

    def tag(self, view: np.ndarray) -> list[Tag]:
        data = self._post(view, {"max_tags": self.max_tags})
        raw = data.get("tags")
        if not isinstance(raw, list):
            raise BackendOutputError(f"{self.name}: 'tags' is missing or not a list")
        out: list[Tag] = []
        seen = set()
        for t in raw:
            label, score = (t, 1.0) if isinstance(t, str) else ((t.get("label"), t.get("score", 1.0))
                                                                 if isinstance(t, dict) else (None, None))
            sc = _finite(score)
            if not isinstance(label, str) or not label.strip() or sc is None or not 0.0 <= sc <= 1.0:
                self.dropped += 1
                continue
            label = " ".join(label.lower().split())
            if label not in seen:
                seen.add(label)
                out.append(Tag(label, sc, f"http:{self.model_name}"))
        return out[: self.max_tags]


class HttpGrounder(_HttpModel):
    """Rex-Omni (or any grounder) behind an HTTP service; see the module doc for the protocol."""

    name = "http"

    def __init__(self, url: str, model: str = "Rex-Omni", box_threshold: float = 0.3, **kw: Any) -> None:
        super().__init__(url, model, **kw)
        self.box_threshold = float(box_threshold)

    def ground(self, view: np.ndarray, tags: Sequence[str]) -> list[Detection]:
        from curation.captioning.geometry import valid_box

        data = self._post(view, {"tags": list(tags)})
        raw = data.get("detections")
        if not isinstance(raw, list):
            raise BackendOutputError(f"{self.name}: 'detections' is missing or not a list")
        h, w = view.shape[:2]
        out = []
        for d in raw:
            if not isinstance(d, dict):
                self.dropped += 1
                continue
            label, sc, vb = d.get("label"), _finite(d.get("score")), valid_box(d.get("box"), w, h, 1.0)
            if not isinstance(label, str) or not label.strip() or sc is None or vb is None or sc < self.box_threshold:
                self.dropped += 1
                continue
            out.append(Detection(" ".join(label.lower().split()), vb, sc, f"http:{self.model_name}"))
        return out


TAGGERS.register("http", HttpTagger)
GROUNDERS.register("owlv2", Owlv2Grounder)
GROUNDERS.register("http", HttpGrounder)
SEGMENTERS.register("sam2", Sam2Segmenter)


def create_tagger(name: str, **kw: Any):
    return TAGGERS.create(name, **kw)


def create_grounder(name: str, **kw: Any):
    return GROUNDERS.create(name, **kw)


def create_segmenter(name: str, **kw: Any):
    return SEGMENTERS.create(name, **kw)

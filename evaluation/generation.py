"""The generation interface the bench runner accepts instead of a folder: prompt -> image.

A checkpoint plugs into the bench by implementing :class:`ImageGenerator`::

    class MyModel:
        name = "flux2-lora-4k"
        def generate(self, prompt: str, width: int, height: int, seed: int) -> np.ndarray: ...

``generate`` returns an (height, width, 3) uint8 RGB array. The runner calls it once per
bench row (bench order, ``seed = base_seed + row index``), writes the images as PNG into the
model's folder, times each call and records peak memory, then scores the folder like any other.

:class:`DiffusersPipelineGenerator` adapts any diffusers-style pipeline (a callable taking
``prompt, width, height, generator, ...`` and returning an object with ``.images``). Loading a
pipeline by id needs ``diffusers`` and the weights in the local cache; neither is required here,
and :meth:`DiffusersPipelineGenerator.availability` says what is missing.

Library only: no Dagster.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class ImageGenerator(Protocol):
    """prompt -> image at a resolution. ``name`` names the model in reports and MLflow."""

    name: str

    def generate(self, prompt: str, width: int, height: int, seed: int) -> np.ndarray:
        """An (height, width, 3) uint8 RGB image for ``prompt``, deterministic for ``seed``."""
        ...


def generator_availability(gen: Any) -> tuple[bool, str | None]:
    """``gen.availability()`` when it has one, else available."""
    probe = getattr(gen, "availability", None)
    return probe() if callable(probe) else (True, None)


def as_rgb_uint8(image: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Normalise what a pipeline returns (PIL image, uint8 array, float array in [0, 1], torch
    tensor CHW/HWC) to an (H, W, 3) uint8 array; checks the size when given."""
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover
        pass
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # CHW -> HWC
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"generator returned an image of shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    if width is not None and height is not None and a.shape[:2] != (height, width):
        raise ValueError(f"generator returned {a.shape[1]}x{a.shape[0]}, asked for {width}x{height}")
    return np.ascontiguousarray(a)


class DiffusersPipelineGenerator:
    """Adapter: any diffusers pipeline (or a callable with its calling convention) as an
    :class:`ImageGenerator`.

    ``pipeline``: a loaded pipeline object, called as
    ``pipeline(prompt=..., width=..., height=..., generator=torch.Generator(device).manual_seed(seed),
    **call_kwargs)`` and expected to return ``.images[0]`` (PIL or array). Or ``model_id``: a
    Hugging Face id or local folder, loaded lazily with ``diffusers.DiffusionPipeline.from_pretrained(
    model_id, **load_kwargs)`` on first use (needs ``diffusers`` and the weights present locally:
    nothing is downloaded when ``HF_HUB_OFFLINE=1``).
    """

    def __init__(self, pipeline: Callable[..., Any] | None = None, *, name: str | None = None,
                 model_id: str | None = None, device: str = "cpu", call_kwargs: Mapping[str, Any] | None = None,
                 load_kwargs: Mapping[str, Any] | None = None) -> None:
        if pipeline is None and model_id is None:
            raise ValueError("give a pipeline object or a model_id")
        self.pipeline = pipeline
        self.model_id = model_id
        self.device = device
        self.call_kwargs = dict(call_kwargs or {})
        self.load_kwargs = dict(load_kwargs or {})
        self.name = name or (Path(model_id).name if model_id else type(pipeline).__name__)

    def availability(self) -> tuple[bool, str | None]:
        if self.pipeline is not None:
            return True, None
        import importlib.util

        missing = []
        if importlib.util.find_spec("diffusers") is None:
            missing.append("diffusers not installed")
        if importlib.util.find_spec("torch") is None:
            missing.append("torch not installed")
        if not os.path.isdir(str(self.model_id)):
            from evaluation.metrics.base import hf_model_cached

            if hf_model_cached(str(self.model_id)) is None:
                missing.append(f"weights of {self.model_id} not in the Hugging Face cache")
        return (False, "; ".join(missing)) if missing else (True, None)

    def _load(self) -> Callable[..., Any]:
        if self.pipeline is None:
            ok, why = self.availability()
            if not ok:
                raise RuntimeError(f"not available: {why}")
            from diffusers import DiffusionPipeline  # pragma: no cover - needs weights

            self.pipeline = DiffusionPipeline.from_pretrained(self.model_id, **self.load_kwargs).to(self.device)
        return self.pipeline

    def generate(self, prompt: str, width: int, height: int, seed: int) -> np.ndarray:
        import torch

        pipe = self._load()
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        out = pipe(prompt=prompt, width=int(width), height=int(height), generator=g, **self.call_kwargs)
        images = getattr(out, "images", out)
        if isinstance(images, (list, tuple)):
            images = images[0]
        return as_rgb_uint8(images, int(width), int(height))


@dataclass
class GenerationRecord:
    """One generated image: where it went and what it cost."""

    stem: str
    path: str | None
    seed: int
    latency_s: float | None
    error: str | None = None


@dataclass
class GenerationReport:
    generator: str
    width: int
    height: int
    prompt_field: str
    base_seed: int
    records: list[GenerationRecord] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None  # see PeakMemory.kind
    device: str | None = None

    @property
    def latencies(self) -> list[float]:
        return [r.latency_s for r in self.records if r.latency_s is not None and r.error is None]

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "generator": self.generator, "width": self.width, "height": self.height,
            "prompt_field": self.prompt_field, "base_seed": self.base_seed,
            "n_generated": len(lat), "n_failed": sum(1 for r in self.records if r.error),
            "latency_mean_s": float(np.mean(lat)) if lat else None,
            "latency_total_s": float(np.sum(lat)) if lat else None,
            "peak_memory_bytes": self.peak_memory_bytes, "memory_kind": self.memory_kind,
        }


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
    except Exception:  # pragma: no cover
        return None


class PeakMemory:
    """Peak memory while a block runs (the Table A2-like memory column).

    ``kind``: ``"cuda_max_allocated"`` when torch is already loaded and uses CUDA (reset at
    entry), else ``"process_rss_sampled"``: the process's resident set size sampled every
    ``interval`` seconds by a background thread (psutil), which includes whatever the process
    held before the block; without psutil ``"process_peak_rss"`` (``ru_maxrss``, the peak over
    the whole process life)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_bytes: int | None = None
        self.kind: str | None = None
        self._stop = None
        self._thread = None
        self._cuda = False

    def __enter__(self) -> "PeakMemory":
        import sys
        import threading

        torch = sys.modules.get("torch")
        try:
            self._cuda = bool(torch is not None and torch.cuda.is_available())
        except Exception:
            self._cuda = False
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self.kind = "cuda_max_allocated"
            return self
        try:
            import psutil
        except ImportError:
            self.kind = "process_peak_rss"
            return self
        proc = psutil.Process()
        self.kind = "process_rss_sampled"
        self.peak_bytes = int(proc.memory_info().rss)
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.peak_bytes = max(self.peak_bytes or 0, int(proc.memory_info().rss))
                except Exception:  # pragma: no cover
                    return

        self._thread = threading.Thread(target=sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cuda:
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            try:
                import psutil

                self.peak_bytes = max(self.peak_bytes or 0, int(psutil.Process().memory_info().rss))
            except Exception:  # pragma: no cover
                pass
        else:
            self.peak_bytes = _peak_rss_bytes()


def generate_bench(generator: ImageGenerator, rows: Sequence[Any], out_dir: str | os.PathLike, width: int,
                   height: int, base_seed: int = 0, prompt_field: str = "long_caption",
                   log: Callable[[str], None] | None = None) -> GenerationReport:
    """Generate one PNG per bench row into ``out_dir`` (``<stem>.png``), in bench order.

    ``rows``: objects with ``stem``, ``index`` and the caption attribute ``prompt_field``.
    Seed of row i: ``base_seed + i``. A failing call is recorded (the image is then missing
    and scored as such), never fatal. Memory: :class:`PeakMemory` over the whole generation."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = GenerationReport(getattr(generator, "name", type(generator).__name__), int(width), int(height),
                           prompt_field, int(base_seed))
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401  (loaded first so PeakMemory can see CUDA)
    with PeakMemory() as mem:
        for row in rows:
            seed = int(base_seed) + int(row.index)
            prompt = getattr(row, prompt_field)
            t0 = time.perf_counter()
            try:
                img = as_rgb_uint8(generator.generate(prompt, int(width), int(height), seed), int(width), int(height))
                dt = time.perf_counter() - t0
                path = out / f"{row.stem}.png"
                Image.fromarray(img).save(path, compress_level=1)
                rep.records.append(GenerationRecord(row.stem, str(path), seed, dt))
            except Exception as exc:  # one failed prompt must not lose the others
                rep.records.append(GenerationRecord(row.stem, None, seed, time.perf_counter() - t0,
                                                    f"{type(exc).__name__}: {exc}"))
            if log:
                r = rep.records[-1]
                log(f"  generated {row.stem}: " + (f"{r.latency_s:.2f} s" if r.error is None else f"FAILED {r.error}"))
    rep.peak_memory_bytes, rep.memory_kind = mem.peak_bytes, mem.kind
    rep.device = "cuda" if mem.kind == "cuda_max_allocated" else "cpu"
    return rep

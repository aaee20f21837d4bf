"""Where the weight-based bench metrics find their models, and the shared loading helpers.

Used by ``aesthetics``, ``clipscore`` and ``fgclip2``. Nothing here downloads: a model is

* a **Hugging Face model id** looked up in the local HF cache only (``local_files_only``;
  cache folder: the metric option ``cache_dir``, else ``$HF_HUB_CACHE`` / ``$HF_HOME``), or
* a **local directory** written by ``save_pretrained`` / ``hf download --local-dir``.

Each metric takes the model from its metric option (``BenchConfig.metric_options``, filled from
its environment variable by the bench settings), else its default hub id (see :func:`setting`). The id/path rule is
the curation LAION adapter's (:func:`curation.aesthetics.laion._looks_like_path`): a string that
cannot be a ``namespace/name`` id, or that exists on disk, is a path.

:func:`locate_model` checks the files without loading anything and returns either a
:class:`ModelLocation` (the folder to hand to ``from_pretrained`` and a tag naming exactly what
was used: ``<id>@<commit>`` or ``path:<dir>``) or the reason it cannot, naming the model, where
it looked and how to provide it. :class:`HFModelMetric` is the availability / lazy-load skeleton
the three metrics share. Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from curation.hashing import sha256_file
from evaluation.metrics.base import Metric, MetricResult, module_available

CONFIG_FILES: tuple[str, ...] = ("config.json",)
PREPROCESSOR_FILES: tuple[str, ...] = ("preprocessor_config.json",)
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")


def weight_files() -> tuple[str, ...]:
    """The weight file names a checkpoint folder may hold (the LAION adapter's list)."""
    from curation.aesthetics.laion import _WEIGHT_FILES

    return tuple(_WEIGHT_FILES)


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is taken as a filesystem path rather than a hub id (the LAION adapter's rule)."""
    from curation.aesthetics.laion import _looks_like_path

    return bool(_looks_like_path(spec))


def setting(option: Any, env: str, default: str | None) -> str | None:
    """The metric option if given, else ``default``. ``env`` only names the variable that sets the
    option: the bench settings (``orchestration.bench_resources``, for ``uhr bench``, ``uhr metric``
    and the ``bench_scores`` asset) read it and pass its value as the option."""
    if option not in (None, ""):
        return str(option)
    return default


@dataclass(frozen=True)
class ModelLocation:
    """A model found on this machine: ``directory`` holds its files; ``tag`` says which one."""

    spec: str
    directory: str
    tag: str


def _label(req: Any) -> str:
    return req if isinstance(req, str) else " or ".join(req)


def _shards_missing(folder: Path) -> list[str]:
    """``shard <file>`` for each shard that a sharded checkpoint's ``*.index.json`` weight map
    names but ``folder`` lacks (nothing when the folder has a single-file checkpoint)."""
    if any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        return []
    out: list[str] = []
    for idx in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_file = folder / idx
        if not index_file.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            out.append(f"{idx} unreadable ({type(exc).__name__})")
            continue
        out += [f"shard {s}" for s in shards if not (folder / s).is_file()]
    return out


def locate_model(spec: str, label: str, requires: Sequence[Any], *, cache_dir: str | None = None,
                 env: str | None = None, option: str | None = None) -> tuple[ModelLocation | None, str | None]:
    """Find ``spec`` (hub id or directory) with every file of ``requires``; no download, no load.

    ``requires``: file names, or tuples of alternatives (e.g. the weight files). Returns
    ``(location, None)`` or ``(None, reason)``; the reason names ``label``, where it looked and
    the ``env`` variable / metric ``option`` that would point at a copy."""
    how = " or ".join(x for x in (f"set ${env}" if env else "",
                                  f"the metric option {option!r}" if option else "") if x)
    p = Path(spec).expanduser()
    if p.exists() or looks_like_path(spec):
        if not p.is_dir():
            what = "is not a directory" if p.exists() else "does not exist"
            return None, f"{label} weights not found at path {p} ({what})"
        missing = [_label(r) for r in requires
                   if not any((p / f).is_file() for f in ((r,) if isinstance(r, str) else r))]
        missing += _shards_missing(p)
        if missing:
            return None, f"{label} weights not found at path {p}: missing {', '.join(missing)}"
        return ModelLocation(spec, str(p.resolve()), f"path:{p.resolve()}"), None
    # a hub id: the local HF cache only
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        def cached(fname: str) -> str | None:
            r = try_to_load_from_cache(spec, fname, cache_dir=cache_dir)
            return r if isinstance(r, str) else None

        found: dict[str, str | None] = {}
        for r in requires:
            alts = (r,) if isinstance(r, str) else tuple(r)
            found[_label(r)] = next((c for c in map(cached, alts) if c), None)
    except Exception as exc:  # an invalid repo id, a broken cache
        return None, (f"{label} weights for {spec!r} could not be looked up in the HF cache: "
                      f"{type(exc).__name__}: {exc}")
    missing = [k for k, v in found.items() if not v]
    folder = Path(next(v for v in found.values() if v)).parent if len(missing) < len(found) else None
    if folder is not None and not missing:
        missing = _shards_missing(folder)
    if missing:
        cache = cache_dir or HF_HUB_CACHE
        what = ("not in the HF cache" if folder is None
                else f"incomplete in the HF cache (missing {', '.join(missing)})")
        return None, (f"{label} weights not found: model id {spec} is {what} at {cache}; download them "
                      f"(`hf download {spec}`)" + (f", or {how} to a local copy" if how else ""))
    assert folder is not None
    return ModelLocation(spec, str(folder), f"{spec}@{folder.name}"), None


def resolve_device(device: str | None) -> Any:
    """``torch.device``; None / ``"auto"``: CUDA when available, else CPU."""
    import torch

    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def file_sha256(path: str | os.PathLike, n: int = 16) -> str:
    """First ``n`` hex digits of a file's sha256 (what weight file was used)."""
    return sha256_file(path)[:n]


def architecture_mismatches(config: Any, expected: Mapping[str, Any]) -> list[str]:
    """``"<dotted.attr>=<found> (reference <expected>)"`` for each attribute of ``config`` that
    differs from the reference checkpoint's value (an empty list: same architecture)."""
    out = []
    for dotted, want in expected.items():
        obj = config
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if obj != want:
            out.append(f"{dotted}={obj} (reference {want})")
    return out


def open_image(path: str | os.PathLike):
    """``PIL.Image.open`` as the reference (loaded, file closed, mode unchanged), of bytes that
    passed the reader contract (:func:`curation.imageio.open_checked`): the reference turns
    Pillow's decompression-bomb limit off, ours is ``io.max_pixels``, checked before any decode."""
    from curation.imageio import open_checked

    with open_checked(path) as im:
        im.load()
        return im.copy()


def try_open_image(path: str | os.PathLike) -> tuple[Any, str | None]:
    """``(image, None)`` from :func:`open_image`, or ``(None, "failed: cannot read image: ...")``."""
    try:
        return open_image(path), None
    except (OSError, ValueError, SyntaxError) as exc:
        from curation.imageio import describe_error

        return None, f"failed: cannot read image: {describe_error(exc)}"


def image_from_rgb(rgb: Any):
    """A PIL image of an (H, W, 3) uint8 array (values cast to uint8, copied if not contiguous)."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)))


class HFModelMetric(Metric):
    """Availability and lazy loading shared by ``aesthetics``, ``clipscore`` and ``fgclip2``.

    The model spec is the metric option named ``model_option`` (kept in the attribute of that
    name), else ``$model_env``, else ``model_default`` (:func:`setting`). :meth:`availability`
    checks ``needs_modules`` and locates the model once with :func:`locate_model` (the files of
    ``model_files`` plus the weights; nothing is loaded), then :meth:`_check_extra`.
    :meth:`_load` loads it once, on first use: :meth:`_load_model` (imports and
    ``from_pretrained``; any exception there makes the metric unavailable with the reason),
    then :meth:`_use_model` (keeps what was loaded: sets ``_model`` and ``_torch_device``), then
    the comparison with ``reference_architecture``. The set result carries :meth:`provenance`.
    """

    model_option: ClassVar[str] = "model"
    model_env: ClassVar[str] = ""
    model_default: ClassVar[str | None] = None
    #: names the model in "weights not found" reasons; ``load_label`` (default: the same) in
    #: "could not be loaded" reasons
    model_label: ClassVar[str] = ""
    load_label: ClassVar[str] = ""
    #: files the model folder must hold besides the weights (names, or tuples of alternatives)
    model_files: ClassVar[tuple[Any, ...]] = CONFIG_FILES
    needs_modules: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    reference_architecture: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, device: str = "cpu", spec: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.device = device
        setattr(self, self.model_option, setting(os.fspath(spec) if spec else None, self.model_env,
                                                 self.model_default))
        self.cache_dir = os.fspath(cache_dir) if cache_dir else None
        self._avail: tuple[bool, str | None] | None = None
        self._location: ModelLocation | None = None
        self._model: Any = None
        self._torch_device: Any = None
        self._arch_mismatch: list[str] = []

    @property
    def model_spec(self) -> str | None:
        """The hub id or directory asked for (the ``model_option`` attribute)."""
        return getattr(self, self.model_option)

    # ---- requirements ----------------------------------------------------------------------
    def availability(self) -> tuple[bool, str | None]:
        if self._avail is None:
            reasons = [f"{m} not installed" for m in self.needs_modules if not module_available(m)]
            if not reasons:
                loc, why = locate_model(self.model_spec, self.model_label, (*self.model_files, weight_files()),
                                        cache_dir=self.cache_dir, env=self.model_env, option=self.model_option)
                self._location = loc
                reasons += [w for w in (why, self._check_extra()) if w]
            self._avail = (not reasons, "; ".join(reasons) or None)
        return self._avail

    def _check_extra(self) -> str | None:
        """Another requirement's reason (checked after the model is located, found or not)."""
        return None

    def _load(self) -> str | None:
        """Load the model once; on failure the metric becomes unavailable with the reason."""
        if self._model is not None:
            return None
        assert self._location is not None
        src = self._location.directory
        try:
            kw: dict[str, Any] = {"local_files_only": True}
            if self.cache_dir:
                kw["cache_dir"] = self.cache_dir
            loaded = self._load_model(src, kw)
        except Exception as exc:
            why = f"{self.load_label or self.model_label} at {src} could not be loaded: {type(exc).__name__}: {exc}"
            self._avail = (False, why)
            return why
        self._use_model(loaded)
        self._arch_mismatch = architecture_mismatches(self._model.config, self.reference_architecture)
        return None

    def _load_model(self, src: str, kw: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        """Load from the folder ``src`` (``from_pretrained`` keywords ``kw``: local files only,
        the cache folder); returns what :meth:`_use_model` takes."""
        raise NotImplementedError

    def _use_model(self, loaded: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- set result ------------------------------------------------------------------------
    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        r = super().aggregate(results)
        r.extra.update(self.provenance())
        return r

    def _provenance_extra(self) -> dict[str, Any]:
        return {}

    def provenance(self) -> dict[str, Any]:
        """Which model produced the values (for the set result): under ``model_option`` its tag
        (``<id>@<commit>`` or ``path:<dir>``; the spec before it is located), and once loaded
        whether it has the reference architecture (else the attributes that differ)."""
        out: dict[str, Any] = {self.model_option: self._location.tag if self._location else self.model_spec,
                               **self._provenance_extra()}
        if self._model is not None:
            out["reference_architecture"] = not self._arch_mismatch
            if self._arch_mismatch:
                out["architecture_differs"] = self._arch_mismatch
        return out


class CaptionedImageMixin:
    """Caption plumbing shared by the image-text metrics (``clipscore``: short caption,
    ``fgclip2``: long caption). A subclass sets ``caption_field`` and implements
    ``_gate() -> MetricResult | None`` and ``_score(pil_image, caption) -> MetricResult``."""

    caption_field = "short_caption"

    def score_item(self, item: Any):
        if item.path is None:
            return self.result(None, "missing image")
        gated = self._gate()
        if gated is not None:
            return gated
        img, why = try_open_image(item.path)
        if why:
            return self.result(None, why)
        return self._score(img, getattr(item, self.caption_field))

    def _score_path(self, path: str):
        kind = self.caption_field.replace("_caption", "")
        return self.result(None, f"needs the image's {kind} caption: score it through the bench runner "
                                 f"(score_item) or score_image(rgb, {self.caption_field}=...)")

    def _score_image(self, rgb: Any, **context: Any):
        return self._score(image_from_rgb(rgb), context.get(self.caption_field))

    def score_set(self, paths, captions=None, **kwargs: Any):
        """The set value of ``paths`` (bench order) with their captions of ``caption_field``."""
        from evaluation.metrics.base import BenchItem

        if captions is None:
            return self.aggregate([self.score_path(p) for p in paths])
        if len(captions) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(captions)} captions")
        return self.aggregate([self.score_item(BenchItem(i, str(p), os.fspath(p), **{self.caption_field: c}))
                               for i, (p, c) in enumerate(zip(paths, captions))])

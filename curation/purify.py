"""Per-image purification (section 3.1.2): one decode, every score, each filter on its own.

:func:`score_one` decodes an image once, computes the strip-wise scores of
:mod:`curation.scores`, writes a contact-sheet thumbnail and (optionally) the 224-px view
the aesthetic models read, and returns a plain dict. It never raises for a bad file: a
decode failure becomes ``reject_reason`` with null scores.

:func:`score_files` runs it over a shard with a bounded process pool (``runtime.workers``),
caching each result as JSON keyed by (config hash, image id) so that a killed run resumes
where it stopped and a re-run is idempotent.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import cv2

from curation import reasons
from curation.atomic import is_disk_full, read_json, write_bytes, write_json
from curation.imageio import ImageReadError, decode_rgb, thumbnail
from curation.scores import absolute_verdicts, purification_scores

VIEW_SHORT_SIDE = 224  # CLIP ViT-L/14 input side


def _save_jpeg(path: Path, rgb, quality: int = 85) -> None:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        write_bytes(path, enc.tobytes())  # a full disk leaves no partial file


def _save_view(path: Path, rgb) -> None:
    h, w = rgb.shape[:2]
    s = VIEW_SHORT_SIDE / min(h, w)
    size = (max(VIEW_SHORT_SIDE, round(w * s)), max(VIEW_SHORT_SIDE, round(h * s)))
    view = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ok, enc = cv2.imencode(".png", cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding of the model view {path} failed")
    write_bytes(path, enc.tobytes())


def score_one(
    path: str,
    image_id: str,
    purification: dict,
    max_pixels: int,
    thumb_path: str | None = None,
    thumb_px: int = 256,
    view_path: str | None = None,
    expect_sha256: str | None = None,
) -> dict:
    """Decode once and compute every per-image score. Keys: see IMAGE_SCORES manifest.

    ``expect_sha256``: the content hash recorded upstream (raw_pool's ``sha256``); bytes that no
    longer hash to it are ``source_changed``, never scored under the old id (the hash is of the
    very bytes decoded)."""
    t0 = time.perf_counter()
    out: dict = {"image_id": image_id, "source_path": path}
    try:
        rgb = decode_rgb(path, max_pixels, expect_sha256=expect_sha256)
    except ImageReadError as exc:
        out.update(reject_reason=exc.reason, reject_detail=exc.detail, seconds=time.perf_counter() - t0)
        return out
    except MemoryError as exc:  # a header that lied about its size
        out.update(reject_reason=reasons.TOO_MANY_PIXELS, reject_detail=f"out of memory: {exc}",
                   seconds=time.perf_counter() - t0)
        return out
    except Exception as exc:  # any decoder failure is a recorded reason, never a crash
        out.update(reject_reason=reasons.CORRUPT, reject_detail=f"{type(exc).__name__}: {exc}"[:500],
                   seconds=time.perf_counter() - t0)
        return out
    h, w = rgb.shape[:2]
    if thumb_path:
        _save_jpeg(Path(thumb_path), thumbnail(rgb, thumb_px))
    if view_path:
        _save_view(Path(view_path), rgb)
    s = purification_scores(rgb, purification)  # grey band by band: no full-size grey copy
    del rgb
    verdicts = absolute_verdicts(s, purification)
    out.update(
        width=w,
        height=h,
        megapixels=w * h / 1e6,
        exposure_fraction=s.exposure_fraction,
        laplacian_var=s.laplacian_var,
        flat_fraction=s.flat_fraction,
        flat_patches=s.flat_patches,
        entropy=s.entropy,
        pass_exposure=verdicts["exposure"],
        pass_sharpness=verdicts["sharpness"],
        pass_flatness=verdicts["flatness"],
        thumb_path=thumb_path,
        seconds=time.perf_counter() - t0,
    )
    return out


def first_absolute_reason(row: dict) -> str | None:
    """The first failing absolute filter in verdict order (exposure, sharpness, flatness)."""
    if row.get("reject_reason"):
        return row["reject_reason"]
    if row.get("pass_exposure") is False:
        return reasons.OVER_OR_UNDER_EXPOSED
    if row.get("pass_sharpness") is False:
        return reasons.BLURRED
    if row.get("pass_flatness") is False:
        return reasons.FLAT
    return None


#: reasons of :func:`score_one` that describe the file's state, not its content (not cached)
_NOT_CACHED = (reasons.SOURCE_CHANGED, reasons.UNREADABLE, reasons.NOT_A_REGULAR_FILE)


@dataclass(frozen=True)
class MemoryBudget:
    """What the worker processes of one shard run may hold together (``runtime.memory_budget_mb``)
    and the estimate of one worker's peak RSS scoring an image of ``p`` pixels:
    ``base_mb + mb_per_mp * p / 1e6`` MB (``runtime.worker_base_mb``, ``runtime.worker_mb_per_mp``,
    measured by ``benchmarks/throughput.py`` / ``benchmarks/filters.py``; not in paper)."""

    budget_mb: float
    base_mb: float
    mb_per_mp: float

    @classmethod
    def from_config(cls, cfg) -> "MemoryBudget | None":
        """The ``runtime`` keys of a :class:`~curation.config.Config`; None without a budget."""
        b = cfg.get("runtime.memory_budget_mb")
        if b is None:
            return None
        return cls(float(b), float(cfg.get("runtime.worker_base_mb", 0.0)), float(cfg.get("runtime.worker_mb_per_mp", 0.0)))

    def peak_mb(self, pixels: int | float) -> float:
        return self.base_mb + self.mb_per_mp * float(pixels) / 1e6


def score_files(
    jobs: list[dict],
    purification: dict,
    max_pixels: int,
    workers: int,
    cache_dir: Path | None,
    progress: Callable[[int], None] | None = None,
    stats: dict | None = None,
    memory: MemoryBudget | None = None,
) -> list[dict]:
    """Score many images. ``jobs``: dicts with ``path, image_id, thumb_path, thumb_px, view_path``
    and optionally ``sha256`` (the content the id was made from: other bytes are ``source_changed``).

    Results come back in job order. Cached results (``cache_dir/<image_id>.json``) are
    reused; a crashed worker process marks its images ``unreadable`` (worker crashed)
    instead of losing them. ``stats`` (optional) receives ``computed`` / ``reused`` image counts
    and, with a pool, ``max_in_flight`` (images decoding at once) and ``max_in_flight_mb``.

    ``memory``: images enter the pool in job order while the estimated peaks of those in flight
    (:meth:`MemoryBudget.peak_mb` of the job's ``pixels``; ``max_pixels`` when a job has none)
    stay within ``memory.budget_mb``; one image always runs, however large. So ``workers``
    processes decode small images side by side, and two 100 MP images one after the other when
    two would not fit.
    """
    results: dict[int, dict] = {}
    todo = []
    for i, job in enumerate(jobs):
        cached = _read_cache(cache_dir, job["image_id"]) if cache_dir else None
        # reuse unless a file it produced (thumbnail / model view) is missing -- at this job's paths:
        # a cache copied with its data root names the original root's files, which may be gone
        if cached is not None and cached.get("thumb_path"):
            cached["thumb_path"] = job.get("thumb_path")
        produced = [cached.get("thumb_path")] if cached else []
        if cached and not cached.get("reject_reason") and job.get("view_path"):
            produced.append(job["view_path"])
        if cached is not None and all(Path(p).exists() for p in produced if p):
            cached["source_path"] = job["path"]
            results[i] = cached
            if progress:
                progress(1)
        else:
            todo.append(i)
    if stats is not None:
        stats["reused"] = stats.get("reused", 0) + len(jobs) - len(todo)
        stats["computed"] = stats.get("computed", 0) + len(todo)

    def _done(i: int, res: dict) -> None:
        results[i] = res
        # a changed or unreadable source is a state of the file now, not a result of its content:
        # never cached under the id (the next run reads the file again)
        if cache_dir and res.get("reject_reason") not in _NOT_CACHED:
            _write_cache(cache_dir, res)
        if progress:
            progress(1)

    def _args(job: dict):
        return (job["path"], job["image_id"], purification, max_pixels, job.get("thumb_path"),
                job.get("thumb_px", 256), job.get("view_path"), job.get("sha256"))

    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            _done(i, score_one(*_args(jobs[i])))
    else:
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pending = list(todo)[::-1]  # popped from the end: job order
                futs: dict = {}
                in_flight_mb = 0.0
                peak_n = peak_mb = 0
                while pending or futs:
                    while pending and len(futs) < workers:
                        i = pending[-1]
                        need = memory.peak_mb(jobs[i].get("pixels") or max_pixels) if memory else 0.0
                        if futs and memory is not None and in_flight_mb + need > memory.budget_mb:
                            break  # wait for memory: the next image would not fit beside those running
                        pending.pop()
                        futs[pool.submit(score_one, *_args(jobs[i]))] = (i, need)
                        in_flight_mb += need
                        peak_n, peak_mb = max(peak_n, len(futs)), max(peak_mb, in_flight_mb)
                    done, _ = wait(futs, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i, need = futs.pop(fut)
                        in_flight_mb -= need
                        try:
                            _done(i, fut.result())
                        except BrokenProcessPool:
                            raise
                        except Exception as exc:
                            if is_disk_full(exc):  # the data root is full: fail the stage, never a verdict
                                raise
                            _done(i, {"image_id": jobs[i]["image_id"], "source_path": jobs[i]["path"],
                                      "reject_reason": reasons.UNREADABLE, "reject_detail": repr(exc)})
                if stats is not None:
                    stats["max_in_flight"] = max(stats.get("max_in_flight", 0), peak_n)
                    stats["max_in_flight_mb"] = max(stats.get("max_in_flight_mb", 0.0), peak_mb)
        except BrokenProcessPool as exc:
            for i in todo:
                if i not in results:
                    # retry alone in this process; if that dies too the whole run fails loudly
                    try:
                        _done(i, score_one(*_args(jobs[i])))
                    except Exception as exc2:  # pragma: no cover - defensive
                        _done(i, {"image_id": jobs[i]["image_id"], "source_path": jobs[i]["path"],
                                  "reject_reason": reasons.UNREADABLE,
                                  "reject_detail": f"worker crashed ({exc}); retry: {exc2!r}"})
    return [results[i] for i in range(len(jobs))]


def _read_cache(cache_dir: Path, image_id: str) -> dict | None:
    return read_json(cache_dir / f"{image_id}.json")


def _write_cache(cache_dir: Path, res: dict) -> None:
    write_json(cache_dir / f"{res['image_id']}.json", res)


# -- one file on its own (``uhr score-image``) ----------------------------------------------

#: the fields of :func:`score_image_record`, in the CLI's output order
SCORE_KEYS = (
    "path", "image_id", "width", "height", "megapixels", "exposure_fraction",
    "laplacian_var", "flat_fraction", "entropy", "screening", "verdict", "reject_detail",
)


def score_image_record(path: str, cfg) -> dict:
    """Scores, screening and per-image verdict of one file (the keys of :data:`SCORE_KEYS`;
    ``reject_detail`` says why a file cannot be used, null otherwise). Relative cuts need the
    whole pool and are left out. The file is opened once (a FIFO or device is refused unopened):
    the id, the header and the decode all come from the same bytes (:func:`open_pinned`: PNG,
    TIFF and CMYK JPEG are decoded from the open file, their bytes not held)."""
    from curation.imageio import image_id_from_hash, open_pinned
    from curation.screening import screen

    rec = dict.fromkeys(SCORE_KEYS)
    rec["path"] = path
    max_pixels = int(cfg.get("io.max_pixels"))

    def header_fields(sha256: str | None, head) -> None:
        if sha256:
            rec["image_id"] = image_id_from_hash(sha256)
        if head is not None:
            rec.update(width=head.width, height=head.height, megapixels=head.pixels / 1e6)
            rec["screening"], _ = screen(head.width, head.height, cfg.screen_bounds())

    try:  # the bytes are not held during the decode where the format allows (open_pinned)
        with open_pinned(path, max_pixels) as pinned:
            header_fields(pinned.sha256, pinned.header)
            rgb = pinned.decode()
    except ImageReadError as exc:
        if rec["image_id"] is None:  # refused after the hash / the header: they are still reported
            header_fields(exc.known.get("sha256"), exc.known.get("header"))
        rec["verdict"] = exc.reason
        rec["reject_detail"] = exc.detail or exc.reason
        return rec
    except MemoryError as exc:
        rec["verdict"], rec["reject_detail"] = reasons.TOO_MANY_PIXELS, f"out of memory: {exc}"
        return rec
    s = purification_scores(rgb, cfg["purification"])
    del rgb
    v = absolute_verdicts(s, cfg["purification"])
    rec.update(
        exposure_fraction=s.exposure_fraction,
        laplacian_var=s.laplacian_var,
        flat_fraction=s.flat_fraction,
        entropy=s.entropy,
    )
    if rec["screening"] != reasons.PASS:
        rec["verdict"] = rec["screening"]
    else:
        rec["verdict"] = first_absolute_reason(
            {"pass_exposure": v["exposure"], "pass_sharpness": v["sharpness"], "pass_flatness": v["flatness"]}
        ) or reasons.PASS
    return rec

"""The bench runner: score one "model" on the bench with every registered metric.

A model is either a **folder of generated images** or an :class:`~evaluation.generation.ImageGenerator`
(the runner generates the bench first, then scores the folder). The **prompts file** is JSONL,
one row per bench image with ``file_name, short_caption, long_caption`` (PixVerve-Bench's
``benchmark.jsonl`` layout); its order is the bench order, and a generated (or reference) image
matches a row by its file stem (``0001.png`` <-> ``{"file_name": "0001.jpg", ...}``).

What a run produces (``out_dir``, default ``<data root>/bench/<model>``):

* ``scores.json`` -- everything: per-image rows (path, sha256, size, every metric's value or
  reason, the metric's extra including the judges' sub-scores), per-set results, protocol
  versions, judge backend / model / prompt hashes, missing / extra / ambiguous files, timings
  and peak memory, the MLflow run;
* ``per_image.csv`` -- one row per bench row, one column per metric (empty = no value), plus
  ``<metric>_reason``;
* ``index.html`` -- the per-image audit page (thumbnail, the patches the judges saw, sub-scores);
* ``views/<stem>/`` -- the exact bytes each judge was sent (MSFI global view and patches, ICS
  view); ``thumbs/<stem>.jpg``;
* an MLflow run (one per model): params = metric protocol versions, judge backend / model,
  prompt hashes, prompts file hash, evaluation size; metrics = the set values that exist;
  tags ``unavailable.<metric>`` = the reason of each metric without a value; artifacts = the
  reports above. Tracking URI: ``BenchConfig.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
  ``sqlite:///<data root>/mlflow/mlflow.db`` (artifacts next to it).

Unavailable metrics are kept with their reason ("not available: ..."), never a number. ``msfi`` /
``ics`` run the reference's judge protocol and need the reference's prompts file
(``BenchConfig.reference_prompts``); ``msfi_strict`` / ``ics_strict`` run the project's own. A
judge whose backend is not a model endpoint (the offline ``heuristic`` client) produces
``<metric>_heuristic`` (``msfi_heuristic``, ``msfi_strict_heuristic``, ...); the real names then
say why they have no value.

Library only: no Dagster import (the asset in ``assets/bench.py`` and ``uhr bench`` call it).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from curation.hashing import sha256_file
from evaluation.reports import per_image_csv, per_image_html
from evaluation.results import NOT_SELECTED, RESULT_FILE, BenchResult, _jsonable, load_result  # noqa: F401  (re-exported)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_EXPERIMENT = "uhrforge-bench"
THUMB_PX = 256

Log = Callable[[str], None]


# =============================================================================================
# prompts file and matching
# =============================================================================================
@dataclass(frozen=True)
class BenchPrompt:
    """One row of the prompts file; ``index`` is its position (bench order)."""

    index: int
    file_name: str
    short_caption: str
    long_caption: str

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


def load_prompts(path: str | os.PathLike) -> list[BenchPrompt]:
    """Read the JSONL prompts file. Blank lines are skipped; a row without ``file_name`` or with
    a stem seen before raises ``ValueError`` (with the line number); a missing caption is ''."""
    rows: list[BenchPrompt] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(obj, dict) or not obj.get("file_name"):
                raise ValueError(f"{path}:{lineno}: a row needs a 'file_name'")
            p = BenchPrompt(len(rows), str(obj["file_name"]), str(obj.get("short_caption") or ""),
                            str(obj.get("long_caption") or ""))
            if p.stem in seen:
                raise ValueError(f"{path}:{lineno}: stem {p.stem!r} already on line {seen[p.stem]}")
            seen[p.stem] = lineno
            rows.append(p)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


@dataclass
class Matching:
    """Images of a folder matched to bench rows by file stem."""

    paths: dict[str, str]                 # stem -> file
    missing: list[str]                    # stems without an image (bench order)
    extra: list[str]                      # image files whose stem is no bench row
    ambiguous: dict[str, list[str]]       # stem -> several files (none is used)
    #: stem of a missing row -> why the entries named like it are no image (e.g. ``x.gif:
    #: unsupported_format: GIF``, ``x.png: not_a_regular_file: a broken symlink``)
    not_images: dict[str, str] = field(default_factory=dict)

    def missing_reason(self, stem: str) -> str:
        """What a bench report says of a row without an image."""
        if stem in self.ambiguous:
            return "ambiguous: several files " + ", ".join(self.ambiguous[stem])
        return f"missing image ({self.not_images[stem]})" if stem in self.not_images else "missing image"

    def path_list(self, prompts: Sequence[BenchPrompt]) -> list[str | None]:
        return [self.paths.get(p.stem) for p in prompts]


def match_images(folder: str | os.PathLike, prompts: Sequence[BenchPrompt]) -> Matching:
    """Match the image files directly inside ``folder`` to the bench rows by stem: files with an
    image suffix (``IMAGE_EXTS``); for a row without one, its only entry under another suffix
    when the reader contract's header probe finds an image in it."""
    folder = Path(folder)
    by_stem: dict[str, list[str]] = {}
    others: dict[str, list[Path]] = {}  # entries that are not image files by name and kind
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            by_stem.setdefault(p.stem, []).append(str(p))
        else:
            others.setdefault(p.stem, []).append(p)
    wanted = {p.stem for p in prompts}
    paths = {s: v[0] for s, v in by_stem.items() if s in wanted and len(v) == 1}
    ambiguous = {s: v for s, v in by_stem.items() if s in wanted and len(v) > 1}
    extra = [f for s, v in by_stem.items() if s not in wanted for f in v]
    not_images: dict[str, str] = {}
    for stem in [p.stem for p in prompts if p.stem not in paths and p.stem in others and p.stem not in ambiguous]:
        # a row's only entry under another suffix (``x.JSON``, ``x.jpeg_``) is read by content
        verdicts = [(e, _why_not_an_image(e)) for e in others[stem]]
        images = [e for e, why in verdicts if why is None]
        if len(images) == 1 and len(others[stem]) == 1:
            paths[stem] = str(images[0])
        elif images:
            ambiguous[stem] = [str(e) for e in others[stem]]
        else:
            not_images[stem] = "; ".join(why for _, why in verdicts)
    missing = [p.stem for p in prompts if p.stem not in paths]
    return Matching(paths, missing, sorted(extra), ambiguous, not_images)


def _why_not_an_image(path: Path) -> str | None:
    """``name: reason: detail`` for a folder entry named like a bench row whose suffix is no image
    suffix, or None when its header is an image the reader contract reads (header only; never
    opened unless a regular file)."""
    from curation.imageio import ImageReadError, default_max_pixels, probe

    try:
        probe(path, default_max_pixels())
    except ImageReadError as exc:
        return f"{path.name}: {exc.reason}" + (f": {exc.detail}" if exc.detail else "")
    return None


# =============================================================================================
# configuration
# =============================================================================================
def default_data_root() -> Path:
    """``data/demo``, the embedded default: callers pass their settings' data root (the bench
    settings, ``orchestration.bench_resources``, read ``UHR_DATA_ROOT``)."""
    return Path("data") / "demo"


#: keys of ``judges.bench`` that configure the bench, not the judge client (``make_judge`` drops them)
BENCH_JUDGE_KEYS = ("reference_prompts",)


def make_judge(backend: str | None, section: Mapping[str, Any] | None = None, *,
               base_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Any:
    """The MSFI / ICS judge: a :mod:`curation.vlm` client, or None for backend ``none``.

    ``section``: the client config, i.e. ``judges.bench`` of the profile with the deployment's
    endpoint (``curation.vlm.use_config``; ``BenchSettings.judge`` builds it); a relative
    ``cache_dir`` resolves against ``base_dir`` (the data root), ``cache_dir`` overrides it.
    ``auto``: ``vllm`` when the section has an endpoint, else the offline ``heuristic`` client
    (whose scores the metrics report as ``msfi_heuristic`` / ``ics_heuristic``); an endpoint
    that cannot be reached gives judge failures, never heuristic scores."""
    backend = (backend or "auto").lower()
    if backend == "none":
        return None
    from curation.vlm import create_vlm_client

    cfg: dict[str, Any] = {k: v for k, v in dict(section or {}).items() if k not in BENCH_JUDGE_KEYS}
    cfg["backend"] = backend
    if cache_dir:
        cfg["cache_dir"] = str(cache_dir)
    return create_vlm_client(cfg, base_dir=base_dir)


def default_tracking_uri(data_root: str | os.PathLike | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else a local sqlite store under the data root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(data_root) if data_root else default_data_root()
    db = (root / "mlflow" / "mlflow.db").resolve()
    return f"sqlite:///{db}"


@dataclass
class BenchConfig:
    """How a bench run scores.

    * ``metrics``: names to run (default: every registered metric); the result lists the
      others as "not run (not selected)";
    * ``metric_options``: ``{name: {kwarg: value}}`` passed to ``create_metric``;
    * ``eval_size``: FID evaluation size S (4096 / 8192 / 10240 for the 4K / 8K / 10K tiers);
    * ``judge``: a VLM client (:mod:`curation.vlm`) for MSFI / ICS, or None;
    * ``reference_prompts``: the reference's ``eval/util/build_prompts.py`` (or a folder holding
      it) that ``msfi`` / ``ics`` read their prompts from; None: they are "not available";
    * ``mlflow``: log a run; ``tracking_uri`` / ``experiment``;
    * ``save_views``: keep what the judges saw; ``thumbnails``: write HTML thumbnails;
    * generation (when the model is a generator): ``width``, ``height``, ``base_seed``,
      ``prompt_field`` (which caption is the prompt);
    * ``feature_cache_dir``: where FID features are cached (a reference set is embedded once).
    """

    metrics: Sequence[str] | None = None
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    eval_size: int = 4096
    device: str = "cpu"
    judge: Any = None
    reference_prompts: str | None = None
    data_root: str | None = None
    mlflow: bool = True
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    save_views: bool = True
    thumbnails: bool = True
    width: int = 4096
    height: int = 4096
    base_seed: int = 0
    prompt_field: str = "long_caption"
    feature_cache_dir: str | None = None


# =============================================================================================
# metrics
# =============================================================================================
FID_FAMILY = ("fid", "fid_patch", "fid_fidhelper_inception", "fid_patch_fidhelper_inception")
#: the judged metrics; the first two under the reference's protocol (they need its prompts file)
JUDGED = ("msfi", "ics", "msfi_strict", "ics_strict")
REFERENCE_JUDGED = ("msfi", "ics")


def _make_metric(name: str, cfg: BenchConfig, cache_dir: str | None) -> Any:
    from evaluation.metrics import create_metric

    opts = dict(cfg.metric_options.get(name, {}))
    if name in FID_FAMILY:
        opts.setdefault("size", cfg.eval_size)
        opts.setdefault("device", cfg.device)
        if name.endswith("fidhelper_inception"):
            opts.setdefault("cache_dir", cache_dir)
    elif name in JUDGED:
        opts.setdefault("judge", cfg.judge)
        if name in REFERENCE_JUDGED:
            opts.setdefault("reference_prompts", cfg.reference_prompts)
    elif name in ("aesthetics", "clipscore", "fgclip2"):
        opts.setdefault("device", cfg.device)
    return create_metric(name, **opts)


def _metric_record(m: Any, value: float | None, reason: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    cls = type(m)  # the instance's protocol version: a reference judge's records its prompts file's hash
    return {"value": value, "reason": reason, "kind": cls.kind, "higher_is_better": cls.higher_is_better,
            "protocol_version": m.protocol_version, "base_metric": cls.name, "extra": _jsonable(dict(extra))}


def _image_info(path: str, hash_images: bool = True) -> dict[str, Any]:
    """Bytes, sha256, size, format and mode of a bench image through the reader contract
    (:func:`curation.imageio.read_checked`: a regular file, ``io.max_pixels`` before any decode,
    complete and undamaged data); a refused file gets ``error`` and ``reject_reason``."""
    from curation.imageio import ImageReadError, default_max_pixels, read_checked, read_source

    info: dict[str, Any] = {}
    try:
        src = read_source(path, default_max_pixels())
        info["bytes"] = src.size
        if hash_images:
            info["sha256"] = src.sha256
        h = read_checked(src).header
        w, ht = (h.height, h.width) if h.orientation in (5, 6, 7, 8) else (h.width, h.height)
        info.update(width=int(w), height=int(ht), format=h.format, mode=h.mode)
    except ImageReadError as exc:
        info.update(error=f"{exc.reason}: {exc.detail}", reject_reason=exc.reason)
    return info


def _thumbnail(path: str, dest: Path) -> str | None:
    from PIL import Image

    from curation.imageio import open_checked

    try:
        with open_checked(path) as im:
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced scale
            im = im.convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX), Image.LANCZOS)
            dest.parent.mkdir(parents=True, exist_ok=True)
            im.save(dest, quality=90)
        return str(dest)
    except (OSError, ValueError, SyntaxError):
        return None


# =============================================================================================
# the run
# =============================================================================================
def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "model"


def run_bench(model: str | os.PathLike | Any, prompts: str | os.PathLike, reference: str | os.PathLike | None = None,
              out_dir: str | os.PathLike | None = None, config: BenchConfig | None = None, name: str | None = None,
              log: Log | None = None) -> BenchResult:
    """Score ``model`` (a folder of images or an ImageGenerator) on the bench ``prompts``.

    ``reference``: folder of the real bench images (matched by stem like the generated ones),
    needed by the FID family. ``out_dir``: this model's output folder (default
    ``<data root>/bench/<name>``). ``name``: the model's name in reports and MLflow (default:
    the folder's name or the generator's ``name``). Returns the :class:`BenchResult` (also
    saved as ``scores.json``).

    The phases, in order: :func:`resolve_inputs`, :func:`load_metrics`, :func:`score_images`
    and :func:`aggregate_scores` (both under one peak-memory probe), :func:`complete_records`,
    :func:`assemble_result`, :func:`write_outputs`, :func:`log_run`."""
    from evaluation.generation import PeakMemory

    cfg = config or BenchConfig()
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    inputs = resolve_inputs(model, prompts, reference, out_dir, cfg, name, log)
    chosen = load_metrics(cfg, inputs.data_root)
    t_score = time.perf_counter()
    with PeakMemory() as mem:
        scored = score_images(inputs, chosen, cfg, log)
        aggregate_scores(inputs, chosen, scored, log)
    scoring_s = time.perf_counter() - t_score
    records = complete_records(chosen, scored.rows)
    result = assemble_result(inputs, chosen, scored, records, cfg, scoring_s, mem)
    write_outputs(result)
    log_run(result, cfg, inputs.data_root, log)
    result.timings["total_s"] = round(time.perf_counter() - t_start, 4)
    result.save()
    return result


@dataclass
class BenchInputs:
    """What a run scores, resolved: the prompts, the model's name and source, the output folder,
    the image folder (generated first for a generator) and the images matched to the bench rows."""

    name: str
    source: dict[str, Any]
    prompts_path: Path
    rows: list[BenchPrompt]
    data_root: Path
    out: Path
    folder: Path
    reference: str | os.PathLike | None
    generation: dict[str, Any] | None
    matching: Matching
    gen_paths: list[str | None]
    ref_paths: list[str | None] | None
    ref_missing: list[str]


def resolve_inputs(model: str | os.PathLike | Any, prompts: str | os.PathLike, reference: str | os.PathLike | None,
                   out_dir: str | os.PathLike | None, cfg: BenchConfig, name: str | None, log: Log) -> BenchInputs:
    """Phase 1: read the prompts file, resolve the model (a folder, or a generator that must be
    available), create the output folder, generate the bench images for a generator, and match
    the images (and the reference set's) to the bench rows by stem."""
    from evaluation.generation import generate_bench, generator_availability

    prompts_path = Path(prompts).resolve()
    rows = load_prompts(prompts_path)
    data_root = Path(cfg.data_root) if cfg.data_root else default_data_root()

    generation = None
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        name = name or folder.name
        source = {"kind": "folder", "path": str(folder)}
    else:
        gen = model
        if not callable(getattr(gen, "generate", None)):
            raise TypeError(f"model must be a folder or an ImageGenerator, got {type(gen).__name__}")
        ok, why = generator_availability(gen)
        name = name or str(getattr(gen, "name", type(gen).__name__))
        if not ok:
            raise RuntimeError(f"generator {name} not available: {why}")
        source = {"kind": "generator", "generator": name}
        folder = None
    out = Path(out_dir).resolve() if out_dir else (data_root / "bench" / _safe_name(name)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if folder is None:
        folder = out / "images"
        log(f"[{name}] generating {len(rows)} images at {cfg.width}x{cfg.height} ...")
        rep = generate_bench(model, rows, folder, cfg.width, cfg.height, cfg.base_seed, cfg.prompt_field, log=log)
        generation = rep.summary()
        generation["records"] = [asdict(r) for r in rep.records]
        source["path"] = str(folder)

    matching = match_images(folder, rows)
    gen_paths = matching.path_list(rows)
    ref_paths: list[str | None] | None = None
    ref_missing: list[str] = []
    if reference is not None:
        ref_match = match_images(Path(reference).resolve(), rows)
        ref_paths, ref_missing = ref_match.path_list(rows), ref_match.missing
    log(f"[{name}] {len(rows) - len(matching.missing)}/{len(rows)} images matched"
        + (f", {len(matching.missing)} missing" if matching.missing else "")
        + (f", {len(matching.extra)} extra files ignored" if matching.extra else ""))
    return BenchInputs(name, source, prompts_path, rows, data_root, out, folder, reference, generation, matching,
                       gen_paths, ref_paths, ref_missing)


@dataclass
class BenchMetrics:
    """The metrics of a run: every registered name, the selected ones, the instances that can
    run (per image / per set), and a record for each selected one that cannot (its reason)."""

    registered: list[str]
    selected: list[str]
    available: dict[str, Any]
    per_image: dict[str, Any]
    per_set: dict[str, Any]
    records: dict[str, dict[str, Any]]


def load_metrics(cfg: BenchConfig, data_root: Path) -> BenchMetrics:
    """Phase 2: create the selected metrics (``KeyError`` for an unknown name) with the run's
    options; a metric that comes back under another name (the judges' heuristic stand-ins, a
    protocol-changing option) or that is not available gets a record with the reason."""
    from evaluation.metrics import PER_IMAGE, list_metrics
    from evaluation.metrics.judging import judge_backend

    registered = list_metrics()
    selected = list(cfg.metrics) if cfg.metrics is not None else registered
    unknown = [m for m in selected if m not in registered]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {', '.join(registered)}")
    cache_dir = cfg.feature_cache_dir or str(data_root / "cache" / "fid_features")
    metrics: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    for mname in selected:
        m = _make_metric(mname, cfg, cache_dir)
        metrics[m.name] = m
        if m.name != mname:  # the real name says why it has no value
            if mname in JUDGED:
                why = (f"not available: the judge client's backend is {judge_backend(cfg.judge)!r}, not a model "
                       f"endpoint; its stand-in scores are reported as {m.name}")
            else:
                why = f"not run: options {dict(cfg.metric_options.get(mname, {}))} change the protocol; see {m.name}"
            records[mname] = _metric_record(m, None, why, {})
    available: dict[str, Any] = {}
    for mname, m in metrics.items():
        ok, why = m.availability()
        if ok:
            available[mname] = m
        else:
            reason = why if (why or "").startswith("not available") else f"not available: {why}"
            records[mname] = _metric_record(m, None, reason, {})
    per_image = {k: m for k, m in available.items() if m.kind == PER_IMAGE}
    per_set = {k: m for k, m in available.items() if m.kind != PER_IMAGE}
    return BenchMetrics(registered, selected, available, per_image, per_set, records)


@dataclass
class ImageScores:
    """The per-image phase's output: one row per bench row (bench order), each per-image
    metric's results for the scored images, and the seconds spent in each metric."""

    rows: list[dict[str, Any]]
    image_results: dict[str, list]
    metric_seconds: dict[str, float]


def score_images(inputs: BenchInputs, chosen: BenchMetrics, cfg: BenchConfig, log: Log) -> ImageScores:
    """Phase 3: every bench row in order: a missing or ambiguous image gets the reason for each
    per-image metric; a matched one its file info (hash, size, format), a thumbnail, and every
    per-image metric's value or reason (a metric that raises is recorded as failed, the others
    still run)."""
    from evaluation.metrics import BenchItem

    name, matching, ref_paths, per_image = inputs.name, inputs.matching, inputs.ref_paths, chosen.per_image
    views_root = inputs.out / "views"
    thumbs_root = inputs.out / "thumbs"
    for m in per_image.values():
        m.begin_set()
    metric_seconds: dict[str, float] = {k: 0.0 for k in chosen.available}
    image_results: dict[str, list] = {k: [] for k in per_image}
    out_rows: list[dict[str, Any]] = []
    for p, path in zip(inputs.rows, inputs.gen_paths):
        row: dict[str, Any] = {"index": p.index, "stem": p.stem, "file_name": p.file_name, "path": path,
                               "reference_path": ref_paths[p.index] if ref_paths else None,
                               "short_caption": p.short_caption, "long_caption": p.long_caption,
                               "values": {}, "reasons": {}, "extra": {}}
        if path is None:
            row["status"] = "ambiguous" if p.stem in matching.ambiguous else "missing"
            why = matching.missing_reason(p.stem)
            for k in per_image:
                row["values"][k], row["reasons"][k] = None, why
            out_rows.append(row)
            continue
        row["status"] = "ok"
        info = _image_info(path)
        row.update(info)
        if cfg.thumbnails:
            row["thumb"] = _thumbnail(path, thumbs_root / f"{_safe_name(p.stem)}.jpg")
        item = BenchItem(p.index, p.stem, path, p.short_caption, p.long_caption,
                         image_id=f"sha256:{info['sha256']}" if "sha256" in info else None,
                         views_dir=str(views_root / _safe_name(p.stem)) if cfg.save_views else None)
        for k, m in per_image.items():
            t0 = time.perf_counter()
            try:
                r = m.score_item(item)
            except Exception as exc:  # a metric bug must not lose the other scores
                r = m.result(None, f"failed: {type(exc).__name__}: {exc}")
            metric_seconds[k] += time.perf_counter() - t0
            image_results[k].append(r)
            row["values"][k] = r.value
            if r.value is None:
                row["reasons"][k] = r.reason
            if r.extra:
                row["extra"][k] = _jsonable(r.extra)
        judged = [row["extra"].get(k, {}).get("judge_backend") for k in per_image if k.split("_")[0] in JUDGED]
        row["judge_backend"] = next((b for b in judged if b), None)
        out_rows.append(row)
        log(f"[{name}] {p.stem}: " + ", ".join(
            f"{k}={row['values'][k]:.4g}" for k in per_image if row["values"].get(k) is not None))
    return ImageScores(out_rows, image_results, metric_seconds)


def aggregate_scores(inputs: BenchInputs, chosen: BenchMetrics, scored: ImageScores, log: Log) -> None:
    """Phase 4: each per-image metric's value over the set (from its image results), then each
    per-set metric (FID family) over the image paths and the reference paths; the records go
    into ``chosen.records``, the seconds into ``scored.metric_seconds``."""
    records, metric_seconds = chosen.records, scored.metric_seconds
    for k, m in chosen.per_image.items():
        results = scored.image_results[k]
        agg = m.aggregate(results) if results else m.result(None, "no image to score")
        extra = {**agg.extra, "n_missing": len(inputs.matching.missing), "seconds": round(metric_seconds[k], 4)}
        records[k] = _metric_record(m, agg.value, agg.reason, extra)
    for k, m in chosen.per_set.items():
        t0 = time.perf_counter()
        log(f"[{inputs.name}] {k} over the set ...")
        try:
            r = m.score_set(inputs.gen_paths, reference_paths=inputs.ref_paths)
        except Exception as exc:
            r = m.result(None, f"failed: {type(exc).__name__}: {exc}")
        metric_seconds[k] += time.perf_counter() - t0
        records[k] = _metric_record(m, r.value, r.reason, {**r.extra, "seconds": round(metric_seconds[k], 4)})


def complete_records(chosen: BenchMetrics, out_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Phase 5: the reason of each unavailable per-image metric goes in every row too; every
    registered metric not selected gets a :data:`NOT_SELECTED` record; the records in the
    registry's order (a stand-in next to the metric it stands in for)."""
    from evaluation.metrics import PER_IMAGE, create_metric

    records = chosen.records
    for k, rec in records.items():
        if rec["kind"] == PER_IMAGE and k not in chosen.per_image and rec["value"] is None:
            for row in out_rows:
                row["values"].setdefault(k, None)
                row["reasons"].setdefault(k, rec["reason"])
    for mname in chosen.registered:
        if mname not in chosen.selected:
            records[mname] = _metric_record(create_metric(mname), None, NOT_SELECTED, {})
    order = {n: i for i, n in enumerate(chosen.registered)}
    return dict(sorted(records.items(), key=lambda kv: (order.get(kv[0].split("_heuristic")[0], 99), kv[0])))


def assemble_result(inputs: BenchInputs, chosen: BenchMetrics, scored: ImageScores, records: dict[str, dict[str, Any]],
                    cfg: BenchConfig, scoring_s: float, mem: Any) -> BenchResult:
    """Phase 6: the :class:`BenchResult`: timings (scoring time, per image, per metric, peak
    memory), the judge's backend / model / prompt hashes, the prompts file's hash, the config."""
    from evaluation.metrics.judging import is_model_judge, judge_info

    n_ok = sum(1 for r in scored.rows if r["status"] == "ok")
    timings = {
        "scoring_s": round(scoring_s, 4),
        "scoring_per_image_s": round(scoring_s / n_ok, 4) if n_ok else None,
        "metric_s": {k: round(v, 4) for k, v in scored.metric_seconds.items()},
        "peak_memory_bytes": mem.peak_bytes,
        "memory_kind": mem.kind,
    }
    selected, reference = chosen.selected, inputs.reference
    judge = judge_info(cfg.judge, ())
    for m in chosen.available.values():  # the prompt each judged task sent (a reference file's hash)
        if callable(getattr(m, "prompt_hashes", None)):
            judge["prompt_hashes"].update(m.prompt_hashes())
    judge["is_model"] = is_model_judge(cfg.judge)
    judge["reference_prompts"] = _reference_prompts_info(cfg)
    return BenchResult(
        model=inputs.name, source=inputs.source, out_dir=str(inputs.out), prompts_file=str(inputs.prompts_path),
        prompts_sha256=sha256_file(inputs.prompts_path),
        reference_dir=str(Path(reference).resolve()) if reference else None,
        n_prompts=len(inputs.rows), rows=scored.rows, metrics=records, missing=inputs.matching.missing,
        extra_files=inputs.matching.extra, ambiguous=inputs.matching.ambiguous, reference_missing=inputs.ref_missing,
        judge=judge,
        config={"eval_size": cfg.eval_size, "device": cfg.device, "selected": selected,
                "metric_options": _jsonable(dict(cfg.metric_options)), "prompt_field": cfg.prompt_field,
                "width": cfg.width, "height": cfg.height, "base_seed": cfg.base_seed},
        timings=timings, generation=inputs.generation,
    )


def _reference_prompts_info(cfg: BenchConfig) -> dict[str, Any]:
    """The reference prompts file of ``msfi`` / ``ics``: path, sha256, whether it is the pinned
    file; or the reason it is not used."""
    from evaluation.metrics.reference_judge import reference_prompts_or_reason

    prompts, why = reference_prompts_or_reason(cfg.reference_prompts)
    return prompts.describe() if prompts is not None else {"path": cfg.reference_prompts, "reason": why}


def write_outputs(result: BenchResult) -> None:
    """Phase 7: scores.json, per_image.csv and index.html under the result's folder."""
    out = Path(result.out_dir)
    result.files["per_image_csv"] = per_image_csv(result, out / "per_image.csv")
    result.files["html"] = per_image_html(result, out / "index.html")
    result.files["scores_json"] = str(out / RESULT_FILE)
    result.save()


def log_run(result: BenchResult, cfg: BenchConfig, data_root: Path, log: Log) -> None:
    """Phase 8: with ``cfg.mlflow``, one MLflow run for the result (:func:`log_to_mlflow`);
    ``result.mlflow`` names it."""
    if cfg.mlflow:
        uri = cfg.tracking_uri or default_tracking_uri(data_root)
        log(f"[{result.model}] logging to MLflow at {uri} ...")
        result.mlflow = log_to_mlflow(result, uri, cfg.experiment)


# =============================================================================================
# MLflow
# =============================================================================================
def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s[:6000]


def log_to_mlflow(result: BenchResult, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> dict[str, Any]:
    """One MLflow run for this model: params, metrics, tags and the report files."""
    from mlflow.entities import Metric as MlMetric
    from mlflow.entities import Param, RunTag

    from curation.tracking import open_experiment

    client, exp_id = open_experiment(tracking_uri, experiment)
    tags = {"model": result.model, "source": result.source.get("kind", ""),
            "judge_backend": str(result.judge.get("backend")), "uhrforge.component": "bench"}
    run = client.create_run(exp_id, run_name=result.model, tags=tags)
    rid = run.info.run_id
    params: dict[str, Any] = {f"protocol.{k}": v for k, v in result.protocols.items()}
    params.update({
        "judge.backend": result.judge.get("backend"), "judge.model": result.judge.get("model"),
        "prompts_file": result.prompts_file, "prompts_sha256": result.prompts_sha256,
        "reference_dir": result.reference_dir, "n_prompts": result.n_prompts, "eval_size": result.config["eval_size"],
        "source": result.source.get("path") or result.source.get("generator"),
    })
    for task, h in (result.judge.get("prompt_hashes") or {}).items():
        params[f"prompt_hash.{task}"] = h
    ref = result.judge.get("reference_prompts") or {}
    if ref.get("sha256"):
        params.update({"reference_prompts.path": ref["path"], "reference_prompts.sha256": ref["sha256"],
                       "reference_prompts.pinned": ref["pinned"]})
    if result.generation:
        for k in ("generator", "width", "height", "prompt_field", "base_seed"):
            params[f"generation.{k}"] = result.generation.get(k)
    ts = int(time.time() * 1000)
    metrics = {k: v["value"] for k, v in result.metrics.items() if v["value"] is not None}
    metrics.update({"n_images": result.n_images, "n_missing": len(result.missing),
                    "scoring_s": result.timings["scoring_s"]})
    if result.timings.get("peak_memory_bytes"):
        metrics["scoring_peak_memory_mb"] = result.timings["peak_memory_bytes"] / 2**20
    if result.generation and result.generation.get("latency_mean_s") is not None:
        metrics["generation_latency_mean_s"] = result.generation["latency_mean_s"]
        if result.generation.get("peak_memory_bytes"):
            metrics["generation_peak_memory_mb"] = result.generation["peak_memory_bytes"] / 2**20
    run_tags = [RunTag(f"unavailable.{k}", str(v["reason"])[:5000]) for k, v in result.metrics.items()
                if v["value"] is None]
    client.log_batch(rid, metrics=[MlMetric(k, float(v), ts, 0) for k, v in metrics.items()],
                     params=[Param(k, _param_value(v)) for k, v in params.items()], tags=run_tags)
    for key in ("scores_json", "per_image_csv", "html", "table_md", "table_csv"):
        p = result.files.get(key)
        if p and os.path.exists(p):
            client.log_artifact(rid, p, artifact_path="reports")
    client.set_terminated(rid)
    return {"tracking_uri": tracking_uri, "experiment": experiment, "experiment_id": exp_id, "run_id": rid}

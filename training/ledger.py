"""GPU-hour ledger: what each training run cost, Table A1 beside ours, and a paper-scale forecast.

Appendix E.1: "GPU hours are computed as the product of the number of NVIDIA H20 GPUs used and
the wall-clock training time". A :class:`LedgerRow` records one run (scheme, tier, epochs,
device type, device count, wall clock) and derives ``device_hours = count x wall clock`` and
samples/s. The unit follows the device: a run on GPUs is GPU hours, a run on the CPU is CPU
hours and is never counted or printed as GPU hours.

:func:`table_a1` lays our rows out as the paper's Table A1 (scheme, tier, epochs, H20 GPU
hours) with ours beside it, and the paper's implied device-seconds per sample
(``gpu_hours x 3600 / (images x epochs)``). :func:`forecast` turns a measured
device-seconds-per-sample of each tier into the device hours of a paper-scale run (95,735
images x the paper's epochs), per stage of each ladder.

Rows are JSON lines (``append`` / ``read``), so a ledger file is diffable and DVC-trackable.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import curriculum


def _unit(device_type: str) -> str:
    return "CPU" if device_type.upper().startswith("CPU") else "GPU"


class _DeviceHours:
    """Device hours of a row with ``device_type``, ``device_count`` and ``wall_clock_s``
    (appendix E.1: devices x wall clock), counted as GPU or CPU hours by the device."""

    device_type: str
    device_count: int
    wall_clock_s: float

    @property
    def unit(self) -> str:
        """``GPU`` or ``CPU``: the hours of this row are of that device."""
        return _unit(self.device_type)

    @property
    def device_hours(self) -> float:
        return self.device_count * self.wall_clock_s / 3600.0

    @property
    def gpu_hours(self) -> float | None:
        """Device hours if the devices are GPUs; None for a CPU run (CPU hours are not GPU hours)."""
        return self.device_hours if self.unit == "GPU" else None

    @property
    def cpu_hours(self) -> float | None:
        return self.device_hours if self.unit == "CPU" else None


@dataclass
class LedgerRow(_DeviceHours):
    scheme: str
    tier: str
    epochs: float
    device_type: str
    device_count: int
    wall_clock_s: float
    samples: int
    steps: int = 0
    profile: str = "paper"
    run_id: str | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_clock_s if self.wall_clock_s > 0 else float("nan")

    @property
    def device_seconds_per_sample(self) -> float:
        return self.device_count * self.wall_clock_s / self.samples if self.samples else float("nan")

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(unit=self.unit, device_hours=self.device_hours, gpu_hours=self.gpu_hours, cpu_hours=self.cpu_hours,
                 samples_per_s=self.samples_per_s, device_seconds_per_sample=self.device_seconds_per_sample)
        return d

    @classmethod
    def from_json(cls, d: dict) -> LedgerRow:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})

    @classmethod
    def from_result(cls, result, profile: str = "paper", run_id: str | None = None) -> LedgerRow:
        """A row from a :class:`training.trainer.TrainResult` (its measured wall clock)."""
        return cls(scheme=result.scheme, tier=result.tier, epochs=result.epochs, device_type=result.device_type,
                   device_count=result.device_count, wall_clock_s=result.wall_clock_s, samples=result.samples,
                   steps=result.steps, profile=profile, run_id=run_id,
                   extra={k: result.extra.get(k) for k in ("tier_side", "grid", "token_px", "batch_size", "images")})


def append(path: str | os.PathLike, row: LedgerRow) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as fh:
        fh.write(json.dumps(row.to_json(), default=str) + "\n")


def read(path: str | os.PathLike) -> list[LedgerRow]:
    p = Path(path)
    if not p.exists():
        return []
    return [LedgerRow.from_json(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]


def _paper(cfg) -> tuple[dict, int, str]:
    t = curriculum._training(cfg)
    return t["schemes"], int(t.get("dataset_images", 95735)), t.get("device_type", "NVIDIA H20")


def table_a1(cfg, rows: list[LedgerRow] = ()) -> list[dict]:
    """Table A1's rows (scheme, tier, paper epochs, paper H20 GPU hours, paper device-seconds per
    sample) with ours beside them (sum over our rows of that scheme x tier)."""
    schemes, images, gpu = _paper(cfg)
    out = []
    for scheme, sc in schemes.items():
        for st in sc["ladder"]:
            mine = [r for r in rows if r.scheme == scheme and r.tier == st["tier"]]
            ep, gh = float(st["epochs"]), st.get("gpu_hours")
            row = {"scheme": scheme, "label": sc.get("label", scheme), "tier": st["tier"], "paper_epochs": ep,
                   "paper_gpu_hours": gh, "paper_device": gpu,
                   "paper_gpu_s_per_sample": (gh * 3600 / (images * ep)) if gh else None,
                   "ours_epochs": sum(r.epochs for r in mine) if mine else None,
                   "ours_gpu_hours": sum(r.gpu_hours for r in mine if r.gpu_hours is not None) if any(
                       r.unit == "GPU" for r in mine) else None,
                   "ours_cpu_hours": sum(r.cpu_hours for r in mine if r.cpu_hours is not None) if any(
                       r.unit == "CPU" for r in mine) else None,
                   "ours_device": ", ".join(sorted({f"{r.device_count}x {r.device_type}" for r in mine})) or None,
                   "ours_profile": ", ".join(sorted({r.profile for r in mine})) or None}
            out.append(row)
    return out


def forecast(cfg, seconds_per_sample: dict, images: int | None = None, device_type: str | None = None) -> list[dict]:
    """Device hours of a paper-scale run: for every ladder stage, ``images x paper epochs x
    device-seconds per sample / 3600``. ``seconds_per_sample`` maps ``(scheme, tier)`` or
    ``tier`` to measured device-seconds per sample (``LedgerRow.device_seconds_per_sample``);
    stages without a measurement are left out."""
    schemes, n_img, _ = _paper(cfg)
    n = int(images or n_img)
    unit = _unit(device_type) if device_type else None
    out = []
    for scheme, sc in schemes.items():
        for st in sc["ladder"]:
            sps = seconds_per_sample.get((scheme, st["tier"]), seconds_per_sample.get(st["tier"]))
            if sps is None:
                continue
            ep = float(st["epochs"])
            hours = n * ep * float(sps) / 3600.0
            out.append({"scheme": scheme, "tier": st["tier"], "images": n, "epochs": ep,
                        "device_s_per_sample": float(sps), "device_hours": hours, "unit": unit,
                        "paper_gpu_hours": st.get("gpu_hours"),
                        "ratio_to_paper": (hours / st["gpu_hours"]) if st.get("gpu_hours") else None})
    return out


def format_table_a1(rows: list[dict]) -> str:
    """Markdown of :func:`table_a1` (CPU hours in their own column, never as GPU hours)."""
    head = ("| scheme | tier | paper epochs | paper H20 GPU h | paper GPU-s/sample | our epochs | our GPU h | "
            "our CPU h | our devices |")
    lines = [head, "|" + "---|" * 9]

    def f(x, nd=1):
        return "" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}")

    for r in rows:
        lines.append(f"| {r['label']} | {r['tier']} | {f(r['paper_epochs'], 2)} | {f(r['paper_gpu_hours'])} | "
                     f"{f(r['paper_gpu_s_per_sample'], 1)} | {f(r['ours_epochs'], 3)} | {f(r['ours_gpu_hours'], 4)} | "
                     f"{f(r['ours_cpu_hours'], 4)} | {r['ours_device'] or ''} |")
    return "\n".join(lines)


# -- curation stages that ran in the GPU pool ----------------------------------------------------

STAGE_LEDGER = "curation.jsonl"


def current_device() -> tuple[str, int]:
    """(device type, count) of this process: the CUDA device when torch is loaded and sees one,
    else the CPU (one device). Never imports torch itself."""
    import platform
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0), torch.cuda.device_count()
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", 1


@dataclass
class StageRow(_DeviceHours):
    """One GPU-pool curation stage run (a shard of ``corpus_100mp`` or ``captions``)."""

    stage: str
    shard: str | None
    device_type: str
    device_count: int
    wall_clock_s: float
    images: int
    profile: str = "paper"

    @classmethod
    def now(cls, stage: str, shard: str | None, wall_clock_s: float, images: int, profile: str = "paper") -> StageRow:
        dev, n = current_device()
        return cls(stage, shard, dev, n, float(wall_clock_s), int(images), profile)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(unit=self.unit, device_hours=self.device_hours, gpu_hours=self.gpu_hours, cpu_hours=self.cpu_hours)
        return d


def append_stage(data_root: str | os.PathLike, row: StageRow) -> None:
    p = Path(data_root) / "ledger" / STAGE_LEDGER
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as fh:
        fh.write(json.dumps(row.to_json(), default=str) + "\n")


def read_stages(data_root: str | os.PathLike) -> list[StageRow]:
    p = Path(data_root) / "ledger" / STAGE_LEDGER
    if not p.exists():
        return []
    keys = set(StageRow.__dataclass_fields__)
    return [StageRow(**{k: v for k, v in json.loads(line).items() if k in keys})
            for line in p.read_text().splitlines() if line.strip()]


def gpu_hours_rows(cfg, rows: list[LedgerRow], stage_rows: list[StageRow] = ()) -> list[dict]:
    """``uhr gpu-hours --json`` rows: one per scheme x tier of Table A1 (ours null where not run)
    and one per curation stage that ran in the GPU pool (summed over its shards)."""
    out = []
    for r in table_a1(cfg, rows):
        mine = [x for x in rows if x.scheme == r["scheme"] and x.tier == r["tier"]]
        out.append({"scheme": r["scheme"], "label": r["label"], "tier": r["tier"],
                    "epochs": r["ours_epochs"],
                    "device": ", ".join(sorted({x.device_type for x in mine})) or None,
                    "device_count": max((x.device_count for x in mine), default=None),
                    "wall_s": sum(x.wall_clock_s for x in mine) if mine else None,
                    "gpu_hours": r["ours_gpu_hours"], "cpu_hours": r["ours_cpu_hours"],
                    "samples": sum(x.samples for x in mine) if mine else None,
                    "paper_epochs": r["paper_epochs"], "paper_gpu_hours": r["paper_gpu_hours"]})
    by_stage: dict[str, list[StageRow]] = {}
    for s in stage_rows:
        by_stage.setdefault(s.stage, []).append(s)
    for stage, ss in by_stage.items():
        gpu = [s for s in ss if s.unit == "GPU"]
        cpu = [s for s in ss if s.unit == "CPU"]
        out.append({"scheme": None, "label": f"curation: {stage}", "stage": stage, "tier": None, "epochs": None,
                    "device": ", ".join(sorted({s.device_type for s in ss})),
                    "device_count": max(s.device_count for s in ss), "wall_s": sum(s.wall_clock_s for s in ss),
                    "gpu_hours": sum(s.device_hours for s in gpu) if gpu else None,
                    "cpu_hours": sum(s.device_hours for s in cpu) if cpu else None,
                    "images": sum(s.images for s in ss), "shards": len({s.shard for s in ss}),
                    "paper_epochs": None, "paper_gpu_hours": None})
    return out


def table_markdown(rows: list[dict]) -> str:
    """:func:`gpu_hours_rows` as a Markdown table laid out like Table A1 (``uhr gpu-hours``, the demo)."""
    def f(x, nd=4):
        return "" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else str(x))

    lines = ["| scheme / stage | tier | paper epochs | paper H20 GPU h | our epochs | our device | wall s | "
             "our GPU h | our CPU h |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['label']} | {r['tier'] or ''} | {f(r['paper_epochs'], 2)} | {f(r['paper_gpu_hours'], 0)} | "
                     f"{f(r['epochs'], 3)} | {(str(r['device_count']) + 'x ' + r['device']) if r['device'] else ''} | "
                     f"{f(r['wall_s'], 1)} | {f(r['gpu_hours'])} | {f(r['cpu_hours'])} |")
    return "\n".join(lines)

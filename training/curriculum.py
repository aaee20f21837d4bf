"""Curriculum: tiers, ladders per scheme (Table A1) and ``init_from`` resolution.

A **tier** is a square pixel budget: 4K = 4096^2 (~16 MP), 8K = 8192^2 (~64 MP),
10K = 10240^2 (100 MP) (section 3.2; the sides are the evaluation sizes of section 4.1).
A profile scales every side by ``training.linear_scale`` (pixel budgets by its square). For
Schemes I/II one token covers ``token_px`` = 16 px, so the token grid shrinks with the scale;
Scheme III's patch scales with the side, so its token grid is the paper's at any scale
(4K: 4096/64 = 64^2 tokens, 8K: 64^2, 10K: 32^2 with the paper's 320-px patch, 64^2 with the
public code's 160). Scheme II's partition factors never change: a tier grid must be at least as
large as its largest factor (linear_scale >= 1/8), or :class:`CurriculumError` says so.

A **ladder** is the ordered stages of one scheme (Table A1): tier, epochs, the paper's GPU
hours and where the stage starts (``init_from``): ``base`` (the pretrained backbone) or
``{tier, epoch}`` -- a checkpoint of an earlier stage of the same scheme after that many
epochs (``epoch: null`` = that stage's last checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMES = ("I_full", "I_lora", "II", "III")


class CurriculumError(ValueError):
    pass


def _training(cfg) -> dict:
    data = cfg.data if hasattr(cfg, "data") else cfg
    if "training" in data:
        return data["training"]
    return data


@dataclass(frozen=True)
class Tier:
    name: str
    paper_side: int           # px at the paper's scale
    side: int                 # px after the profile's linear_scale
    token_px: int             # px per token side (I/II: 16; III: the tier's patch)
    scale: float

    @property
    def pixels(self) -> int:
        """The pixel budget of the tier (side^2)."""
        return self.side * self.side

    @property
    def paper_pixels(self) -> int:
        return self.paper_side * self.paper_side

    @property
    def grid(self) -> tuple[int, int]:
        g = self.side // self.token_px
        return g, g

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class InitFrom:
    kind: str                 # "base" | "checkpoint"
    tier: str | None = None
    epoch: float | None = None  # None: the stage's last checkpoint

    def __str__(self) -> str:
        if self.kind == "base":
            return "base"
        return f"{self.tier}@{'final' if self.epoch is None else _fmt(self.epoch)}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Stage:
    scheme: str
    tier: Tier
    epochs: float
    lr: float
    init_from: InitFrom
    paper_gpu_hours: float | None = None
    partition_factors: tuple[tuple[int, int], ...] | None = None   # Scheme II
    patch: int | None = None                                        # Scheme III (scaled px)
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.scheme}/{self.tier.name}"

    def steps(self, images: int, batch_size: int, epochs: float | None = None) -> int:
        """Optimizer steps for ``epochs`` (default: the stage's) over ``images`` at ``batch_size``."""
        e = self.epochs if epochs is None else epochs
        return max(1, math.ceil(e * images / max(1, batch_size)))


def scale_of(cfg, scale: float | None = None) -> float:
    t = _training(cfg)
    return float(scale if scale is not None else t.get("linear_scale", 1.0))


def patch_sizes(cfg, source: str | None = None) -> dict[str, int]:
    """Scheme III patch px per tier at the paper's scale (``paper`` default, or ``public_code``)."""
    iii = _training(cfg)["schemes"]["III"]
    src = source or iii.get("patch_source", "paper")
    return {k: int(v) for k, v in iii["patch"][src].items()}


def tier(cfg, name: str, scheme: str = "I_full", scale: float | None = None, patch_source: str | None = None) -> Tier:
    t = _training(cfg)
    if name not in t["tiers"]:
        raise CurriculumError(f"unknown tier {name!r} (tiers: {list(t['tiers'])})")
    s = scale_of(cfg, scale)
    paper_side = int(t["tiers"][name]["side"])
    side = int(round(paper_side * s))
    if scheme == "III":
        patch = patch_sizes(cfg, patch_source)[name]
        token = int(round(patch * s))
        if token < 2 or token % 2:
            raise CurriculumError(f"Scheme III patch {patch} px x scale {s} = {patch * s} px: need an even patch >= 2 "
                                  "(the local decoder halves it)")
        side = (side // token) * token
    else:
        token = int(t.get("token_px", 16))
        side = (side // token) * token
        if side < token:
            raise CurriculumError(f"tier {name} at scale {s} is smaller than one {token}-px token")
    return Tier(name=name, paper_side=paper_side, side=side, token_px=token, scale=s)


def _init_from(raw: Any) -> InitFrom:
    if raw in (None, "base"):
        return InitFrom("base")
    if isinstance(raw, dict) and "tier" in raw:
        ep = raw.get("epoch")
        return InitFrom("checkpoint", str(raw["tier"]), None if ep is None else float(ep))
    raise CurriculumError(f"init_from must be 'base' or {{tier, epoch}}, got {raw!r}")


def ladder(cfg, scheme: str, scale: float | None = None, patch_source: str | None = None) -> list[Stage]:
    """The stages of one scheme in training order, validated (init_from names an earlier stage
    of the same ladder and an epoch it reaches; Scheme II factors fit the grid)."""
    t = _training(cfg)
    if scheme not in t["schemes"]:
        raise CurriculumError(f"unknown scheme {scheme!r} (schemes: {list(t['schemes'])})")
    sc = t["schemes"][scheme]
    stages: list[Stage] = []
    for raw in sc["ladder"]:
        tr = tier(cfg, raw["tier"], scheme, scale, patch_source)
        init = _init_from(raw.get("init_from", "base" if not stages else {"tier": stages[-1].tier.name, "epoch": None}))
        if init.kind == "checkpoint":
            prev = [s for s in stages if s.tier.name == init.tier]
            if not prev:
                raise CurriculumError(f"{scheme}/{tr.name}: init_from {init} names no earlier stage of the ladder")
            if init.epoch is not None and init.epoch > prev[-1].epochs + 1e-9:
                raise CurriculumError(f"{scheme}/{tr.name}: init_from {init} but {init.tier} trains "
                                      f"{prev[-1].epochs} epochs")
        factors = None
        if scheme == "II":
            factors = tuple(tuple(int(v) for v in f) for f in sc["partition_factors"][tr.name])
            need = max(max(a, b) for a, b in factors)
            if min(tr.grid) < need:
                raise CurriculumError(f"Scheme II at {tr.name}: token grid {tr.grid} is smaller than the partition "
                                      f"factor {need}; linear_scale {tr.scale} too small (factors never change)")
        stages.append(Stage(scheme=scheme, tier=tr, epochs=float(raw["epochs"]), lr=float(sc["lr"]), init_from=init,
                            paper_gpu_hours=raw.get("gpu_hours"), partition_factors=factors,
                            patch=tr.token_px if scheme == "III" else None,
                            extra={k: v for k, v in sc.items() if k in ("rank", "alpha", "label", "backbone")}))
    return stages


def all_ladders(cfg, scale: float | None = None) -> dict[str, list[Stage]]:
    return {s: ladder(cfg, s, scale) for s in _training(cfg)["schemes"]}


def checkpoint_epochs(stages: list[Stage]) -> dict[str, list[float]]:
    """Epochs at which each tier must leave a checkpoint for a later stage (besides its last)."""
    out: dict[str, list[float]] = {}
    for s in stages:
        if s.init_from.kind == "checkpoint" and s.init_from.epoch is not None:
            out.setdefault(s.init_from.tier, []).append(s.init_from.epoch)
    return out


def checkpoint_key(scheme: str, tier_name: str, epoch: float | None) -> str:
    return f"{scheme}/{tier_name}/{'final' if epoch is None else 'epoch-' + _fmt(epoch)}"


def resolve_init(stage: Stage, checkpoints: dict[str, Any]) -> Any:
    """Where a stage starts: ``"base"`` or the checkpoint registered under
    :func:`checkpoint_key` (a path, a registry URI, ...). Missing -> CurriculumError."""
    if stage.init_from.kind == "base":
        return "base"
    key = checkpoint_key(stage.scheme, stage.init_from.tier, stage.init_from.epoch)
    if key not in checkpoints:
        raise CurriculumError(f"{stage.name} starts from {key}, which has not been trained yet")
    return checkpoints[key]

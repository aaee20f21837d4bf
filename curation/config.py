"""Profiles: ``configs/paper.yaml`` is the default; smaller profiles override sizes only.

A profile file (``configs/<name>.yaml`` or any path) is merged over ``paper.yaml``.
Only the dotted keys listed under ``overridable`` in paper.yaml may change; any other
override (a threshold, a score definition, the 240-px flatness patch) raises
``ProfileError``. The resolved profile is then checked against the schema
(:mod:`curation.config_schema`: the type and range of every key, NaN / inf refused, no unknown
key); a violation raises ``ConfigError`` (one line naming the key path, the value and the rule).
The resolved config has a stable hash (:func:`config_hash`) that every manifest row records.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curation.config_schema import ConfigError, validate_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ProfileError(ConfigError):
    """A profile tried to change something other than a size or a count (or does not exist)."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


@dataclass(frozen=True)
class Config:
    """A resolved profile: ``data`` is the merged dict, ``name`` the profile name."""

    name: str
    data: dict

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.data
        for p in dotted.split("."):
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        return cur

    @property
    def hash(self) -> str:
        return config_hash(self.data)

    # -- derived sizes -------------------------------------------------------------
    @property
    def linear_scale(self) -> float:
        return float(self.data["sizes"]["linear_scale"])

    def screen_bounds(self) -> dict[str, float]:
        """Resolution-screen bounds in pixels, scaled by ``linear_scale`` (px) and its square (pixel counts)."""
        s = self.linear_scale
        rs = self.data["resolution_screen"]
        mp = float(rs["megapixel"])
        return {
            "large_min_pixels_exclusive": rs["large"]["min_megapixels_exclusive"] * mp * s * s,
            "large_min_side": rs["large"]["min_side"] * s,
            "medium_min_pixels_inclusive": rs["medium"]["min_megapixels_inclusive"] * mp * s * s,
            "medium_max_pixels_inclusive": rs["medium"]["max_megapixels_inclusive"] * mp * s * s,
            "medium_min_side": rs["medium"]["min_side"] * s,
        }


def config_hash(data: dict) -> str:
    """sha256 (first 16 hex chars) of the canonical JSON of a resolved config."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_yaml(path: Path) -> dict:
    """The mapping in YAML file ``path``; unreadable, malformed or not a mapping -> ConfigError (one line)."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config {path}{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def load_config(profile: str | os.PathLike | None = None, config_dir: str | os.PathLike | None = None) -> Config:
    """Resolve a profile name (``paper``, ``demo``, ``test``) or a YAML path over paper.yaml.

    ``config_dir``: the folder holding ``paper.yaml`` and the profiles (default: the project's
    ``configs/``; a lab may keep its own copy of paper.yaml there)."""
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    base = _read_yaml(config_dir / "paper.yaml")
    if profile is None:  # the library reads no environment: UHR_PROFILE is the settings resource's
        profile = "paper"
    profile = str(profile)
    if profile == "paper":
        return Config("paper", validate_config(base, "paper", str(config_dir / "paper.yaml")))
    path = Path(profile)
    if not path.suffix:
        path = config_dir / f"{profile}.yaml"
    if not path.exists():
        raise ProfileError(f"unknown profile {profile!r} (no file {path})")
    override = _read_yaml(path)
    name = str(override.pop("profile", path.stem))
    allowed = set(base.get("overridable", []))
    merged = copy.deepcopy(base)
    for key, value in _flatten(override).items():
        if key not in allowed:
            raise ProfileError(
                f"profile {name!r} may not override {key!r}: profiles change sizes and counts only "
                f"(allowed: {sorted(allowed)})"
            )
        _set(merged, key, value)
    merged["profile"] = name
    return Config(name, validate_config(merged, name, str(path)))

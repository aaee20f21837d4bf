"""Shared fixtures: the test profile, a small synthetic raw pool, and the test-profile pipeline
materialised once per session (:func:`materialised`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def test_cfg():
    from curation.config import load_config

    return load_config("test")


@pytest.fixture(scope="session")
def paper_cfg():
    from curation.config import load_config

    return load_config("paper")


def shard_to_candidates(root: Path, n: int = 24, seed: int = 2):
    """A labelled test-profile pool of ``n`` images under ``root/raw``, its first shard run through
    raw_pool -> image_scores -> thresholds -> candidate_pool under ``root/data``: ``(cfg, layout, shard)``."""
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.stages import run_candidate_pool, run_image_scores, run_raw_pool, run_thresholds
    from curation.synth import make_raw_pool

    cfg = load_config("test")
    make_raw_pool(root / "raw", n, seed, cfg)
    layout = DataLayout.at(root / "data")
    shard = "shard-00000"
    run_raw_pool(layout, root / "raw", shard, cfg)
    run_image_scores(layout, shard, cfg)
    run_thresholds(layout, cfg)
    run_candidate_pool(layout, shard, cfg)
    return cfg, layout, shard


# -- the test-profile pipeline, materialised once per session -------------------------------------

#: the pool every suite that needs a materialised test profile shares: 40 images, two shards; some
#: images pass the instance check, at least one upscaled image and two distinct ones are released
POOL_N, POOL_SEED = 40, 3


@dataclass(frozen=True)
class Materialised:
    """A materialised test-profile data root: ``data`` holds the raw pool (``data/raw``, so the
    manifests' paths are relative and a copy is self-contained), manifests, caches, corpus files
    and its Dagster home (sqlite, ``data/dagster_home``) with the runs of the first
    materialisation; ``out`` is what :func:`orchestration.pipeline.materialize_all` returned.

    Read-only: a test that writes anything (a re-run, a release, a new config) works on
    :meth:`copy`, never on ``data``."""

    base: Path
    data: Path
    raw: Path
    cfg: object
    out: dict

    @property
    def layout(self):
        from curation.layout import DataLayout

        return DataLayout.at(self.data)

    def copy(self, dst: Path) -> Path:
        """A private copy of the whole data root (raw pool and Dagster home included) at ``dst``."""
        shutil.copytree(self.data, dst, symlinks=True)
        return dst


def _manifests_digest(data: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((data / "manifests").rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def materialised(tmp_path_factory):
    """Every curation asset (raw_pool -> bench_split) materialised once on the test profile, with
    the offline defaults (heuristic VLM judges, lanczos SR, no aesthetic model, no object store).
    At the end of the session its manifests must be unchanged (a test wrote to the shared root
    instead of a copy otherwise)."""
    from curation.config import load_config
    from curation.synth import make_raw_pool
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import materialize_all
    from orchestration.resources import AestheticModels, CurationSettings, ObjectStoreResource, VLMEndpoint
    from orchestration.runs import instance_for

    cfg = load_config("test")
    base = tmp_path_factory.mktemp("materialised")
    data = base / "data"
    raw = data / "raw"
    make_raw_pool(raw, POOL_N, POOL_SEED, cfg)
    defs = build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
        "aesthetics": AestheticModels(),
        "store": ObjectStoreResource(),  # none and no VLM endpoint, whatever the environment says
        "vlm": VLMEndpoint(),
    })
    instance = instance_for(data)
    try:
        out = materialize_all(defs, instance, raw, log=lambda *_: None)
    finally:
        instance.dispose()
    digest = _manifests_digest(data)
    yield Materialised(base=base, data=data, raw=raw, cfg=cfg, out=out)
    assert _manifests_digest(data) == digest, "a test changed the shared materialised data root: use .copy()"

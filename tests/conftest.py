"""Shared fixtures: the test profile and a small synthetic raw pool made once per session."""

from __future__ import annotations

import os
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

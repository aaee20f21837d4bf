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

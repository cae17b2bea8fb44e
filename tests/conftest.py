"""Shared fixtures: where the real footage lives, and the `gpu` marker's skip rule."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """The shared footage folder: $VAD_SHARED_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not (root / "ped2" / "labels.json").is_file():
        pytest.fail(f"real footage not found at {root} (set VAD_SHARED_DATA to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def ped2(shared_data: Path) -> Path:
    return shared_data / "ped2"


@pytest.fixture(scope="session")
def vtest(shared_data: Path) -> Path:
    return shared_data / "vtest" / "vtest.avi"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

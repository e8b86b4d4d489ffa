"""Shared fixtures: models are loaded once per session (the embedded load is the slow part)."""

import os

import pytest
import torch

# every core, unless OMP_NUM_THREADS says otherwise (a shared machine: oversubscribed threads spin)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded():
    from medusa_lib.models import load_base

    return load_base("embedded", device="cpu")


@pytest.fixture(scope="session")
def tiny():
    from medusa_lib.models import load_base

    return load_base("tiny", device="cpu")

"""Shared fixtures. `--device cpu` (the default without a GPU) runs the Triton kernels in
Triton's interpreter; `--device cuda` runs the same tests on the GPU."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="where Triton kernels run: cuda, or cpu under TRITON_INTERPRET=1 (default: cuda if available)",
    )


def pytest_configure(config):
    device = config.getoption("--device")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    elif device == "cuda":
        import torch

        if not torch.cuda.is_available():
            # One line at collection instead of every GPU test failing on its own.
            raise pytest.UsageError("--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    if device == "cpu":
        # Must be set before any @triton.jit kernel is decorated, i.e. before qtriton.kernels is imported.
        os.environ["TRITON_INTERPRET"] = "1"
    config.qtriton_device = device


# Module fixtures that take over ~20 s on 2 CPU cores (one `python -m bench all --smoke` run;
# every kernel variant compiled for sm_90a): every test that uses one is `slow`.
SLOW_FIXTURES = {"smoke_run", "compiled"}


def pytest_collection_modifyitems(config, items):
    """Mark `on_device` every test that runs on the --device: the `interpreter` ones (they
    launch kernels) and those taking the `device` fixture. `-m on_device` is the GPU run's
    selection (bench/gpu_check.sh): the rest runs on the CPU, in CI. Mark `slow` the users
    of SLOW_FIXTURES (`-m "not slow"`: the quick subset; the default run keeps them)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("interpreter") or "device" in fixtures:
            item.add_marker(pytest.mark.on_device)
        if fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device Triton kernels run on in this session: "cuda" or "cpu" (interpreter)."""
    return request.config.qtriton_device


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: fresh data per test, reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))

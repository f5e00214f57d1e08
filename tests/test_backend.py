"""The backend override is per thread / per asyncio task (issue 15, item 7)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import torch

import qtriton
from qtriton.backend import get_backend, set_backend, use_backend


def test_backend_override_is_per_thread(monkeypatch):
    """A thread inside use_backend("numpy") keeps numpy while another thread sets torch,
    its own calls run on numpy, and the main thread is left as it was."""
    monkeypatch.delenv("QTRITON_BACKEND", raising=False)
    import qtriton.numpy_backend as numpy_backend

    ran_on_numpy = []
    original = numpy_backend.quantize
    monkeypatch.setattr(numpy_backend, "quantize", lambda *a: ran_on_numpy.append(True) or original(*a))
    inside, switched = threading.Barrier(2), threading.Barrier(2)
    seen = {}

    def scoped():
        with use_backend("numpy"):
            inside.wait()
            switched.wait()  # the other thread has called set_backend("torch") by now
            seen["scoped"] = get_backend()
            qtriton.quantize_symmetric(torch.ones(4))  # torch input: auto would pick torch
        seen["scoped after"] = get_backend()

    def setter():
        inside.wait()
        set_backend("torch")
        seen["setter"] = get_backend()
        switched.wait()

    threads = [threading.Thread(target=scoped), threading.Thread(target=setter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == {"scoped": "numpy", "scoped after": "auto", "setter": "torch"}
    assert ran_on_numpy == [True]
    assert get_backend() == "auto"


def test_backend_override_is_per_asyncio_task(monkeypatch):
    monkeypatch.delenv("QTRITON_BACKEND", raising=False)

    async def run(name, delay):
        with use_backend(name):
            await asyncio.sleep(delay)
            return get_backend()

    async def both():
        return await asyncio.gather(run("numpy", 0.01), run("torch", 0.03))

    assert asyncio.run(both()) == ["numpy", "torch"]
    assert get_backend() == "auto"


def test_set_backend_and_use_backend_restore(monkeypatch):
    monkeypatch.setenv("QTRITON_BACKEND", "torch")
    set_backend("numpy")
    try:
        with use_backend("triton"):
            assert get_backend() == "triton"
        assert get_backend() == "numpy"
    finally:
        set_backend(None)
    assert get_backend() == "torch"
    assert np.isfinite(qtriton.quantize_symmetric(np.ones(3, np.float32))[1])


def test_get_backend_is_marked_as_torch_compiler_would_mark_it():
    """backend.py marks get_backend without importing torch._dynamo (seconds of `import
    qtriton`): the mark must be the one torch.compiler.assume_constant_result sets."""
    def probe():
        return "x"

    marked = torch.compiler.assume_constant_result(probe)
    assert vars(marked) and vars(marked).items() <= vars(get_backend).items()


def test_import_qtriton_leaves_dynamo_transformers_and_triton_unimported():
    import subprocess
    import sys

    code = "import sys, qtriton; print(sorted(m for m in ('torch._dynamo', 'transformers', 'triton') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

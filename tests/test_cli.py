"""The `qtriton` command: every error a user can cause is one line on stderr and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from qtriton.backend import get_backend
from qtriton.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _qtriton(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the command in a fresh process (no TRITON_INTERPRET unless given)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "QTRITON_BACKEND")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "qtriton.cli", *args], capture_output=True, text=True, env=environment, cwd=ROOT
    )


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow  # ~25 s: qtriton processes
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_triton_backend_without_a_gpu():
    _one_line_error(_qtriton("demo", "--backend", "triton"), "qtriton demo: error:", "TRITON_INTERPRET=1")
    _one_line_error(_qtriton("demo", "--device", "cuda"), "--device cuda", "no CUDA GPU")


def test_bogus_backend_variable_is_named():
    _one_line_error(_qtriton("demo", QTRITON_BACKEND="bogus"), "QTRITON_BACKEND", "'bogus'")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["demo", "--bits", "1"], "--bits: must be an integer in 2..8, got 1"),
        (["demo", "--bits", "9"], "--bits: must be an integer in 2..8, got 9"),
        (["demo", "--size", "0"], "--size: must be an integer in 1..8192, got 0"),
        (["demo", "--tokens", "x"], "--tokens: must be an integer in 1..65536, got 'x'"),
        (["demo", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["report"], "the following arguments are required: path"),
        (["report", "missing.safetensors"], "does not exist"),
        (["report", "x.safetensors", "--bits", "1"], "bits must be an int in 2..8"),
        ([], "the following arguments are required: command"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_options_are_one_line(capsys, tmp_path, argv, fragment):
    argv = [str(tmp_path / a) if a.endswith(".safetensors") else a for a in argv]
    if "x.safetensors" in " ".join(argv):
        from safetensors.torch import save_file

        save_file({"w": torch.ones(4, 4)}, str(tmp_path / "x.safetensors"))
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_report_on_a_pickled_module(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(8, 8), path)
    result = _qtriton("report", str(path))
    _one_line_error(result, "module.pt", "pickled", "state_dict()")
    assert len(result.stderr) < 300


def test_demo_backend_option_does_not_leak(capsys):
    assert main(["demo", "--backend", "numpy", "--size", "16", "--tokens", "4"]) == 0
    assert "backend: numpy" in capsys.readouterr().out
    assert get_backend() == "auto"


@pytest.mark.slow  # ~25 s: a pytest process
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_pytest_device_cuda_without_a_gpu_stops_at_collection():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_cli.py", "--device", "cuda", "--collect-only", "-q",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == ["ERROR: --device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"]


@pytest.mark.parametrize("argv", [["--help"], ["--version"]], ids=["help", "version"])
def test_help_and_version_import_no_torch(argv):
    """The first thing a user types answers at once: no torch, numpy or triton import."""
    code = (
        "import sys\nfrom qtriton.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'triton') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "[]", result.stdout + result.stderr
    expected = "qtriton 0.1.0" if argv == ["--version"] else "{demo,report,eval}"
    assert expected in result.stdout

"""The wheel ships the kernels as qtriton.kernels, never as a top-level `kernels` package
(which would shadow Hugging Face's `kernels`); the command line works."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qtriton.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: setuptools leaves build/ and *.egg-info/ next to the sources.
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "qtriton", "kernels"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("qtriton-*.whl")
    return path


def test_wheel_ships_kernels_inside_qtriton(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"qtriton"}, top_level
    assert "qtriton/kernels/__init__.py" in names
    assert any(n.startswith("qtriton/kernels/") and n.endswith(".py") and "__init__" not in n for n in names)
    assert not any(n.startswith("kernels/") for n in names)


def test_kernels_import_as_qtriton_kernels():
    import qtriton.kernels

    assert Path(qtriton.kernels.__file__).parent == ROOT / "kernels"


def test_demo_prints_the_walkthrough(capsys):
    assert main(["demo", "--size", "64", "--tokens", "8", "--bits", "6"]) == 0
    out = capsys.readouterr().out
    for expected in ("backend: numpy", "symmetric_per_channel", "SNR dB", "quantized matmul", "memory"):
        assert expected in out


def test_demo_on_torch_tensors(capsys):
    assert main(["demo", "--size", "64", "--device", "cpu"]) == 0
    assert "backend: torch ops" in capsys.readouterr().out

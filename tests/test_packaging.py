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
    # `build` and setuptools are development tools, not dependencies: a GPU machine's Python
    # may lack them, and that says nothing about the kernels.
    pytest.importorskip("build", reason="needs the `build` package (a dev dependency) to make the wheel")
    pytest.importorskip("setuptools", reason="needs setuptools to build without isolation")
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


def test_metadata_reads_on_setuptools_before_77():
    # GPU machines build with whatever setuptools their Python has (bench/gpu_check.sh installs
    # with --no-build-isolation); setuptools < 77 rejects a bare SPDX string as project.license.
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(data["project"]["license"], dict), data["project"]["license"]
    assert "license-files" not in data["project"]  # PEP 639 too, setuptools >= 77 only
    assert data["build-system"]["requires"] == ["setuptools>=61"]

"""The benchmarks must keep running: `python -m bench all --smoke` (tiny shapes, Triton's
interpreter) produces checked rows, and plots and tables are drawn from them. Nothing
here is timed; the smoke run's times mean nothing and nobody reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

from bench import linear as bench_linear
from bench import matmul as bench_matmul
from bench import quantize as bench_quantize
from bench.__main__ import main
from bench.common import (
    SMOKE_NOTE,
    Context,
    card_slug,
    check_close,
    check_exact,
    checked,
    input_copies,
    int8_peak_tops,
    load_results,
)
from bench.table import BEGIN, END, markdown, write_into

ROW_FIELDS = {
    "bench", "case", "shape", "dtype", "impl", "median_ms", "p20_ms", "p80_ms", "metric", "value",
    "pct_peak", "check", "speedup", "goals", "card", "driver", "torch", "triton", "commit", "date",
    "run_id", "smoke", "note",
}  # fmt: skip
BASELINES = {
    "quantize": {"copy", "torch ops"},
    "matmul": {"torch._int_mm+epilogue", "torch.mm bf16", "torch.mm fp32"},
    "linear": {"nn.Linear bf16"},
}


def _smoke_context() -> Context:
    env = {"card": "cpu (Triton interpreter)", "smoke": True}
    return Context(device="cpu", smoke=True, quick=False, env=env, l2_bytes=50 * 2**20)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, request):
    """One `python -m bench all --smoke` in a subprocess (its own TRITON_INTERPRET=1)."""
    if request.config.qtriton_device == "cuda":
        pytest.skip("the smoke run is the CPU check; on a GPU, python -m bench --quick runs for real")
    out = tmp_path_factory.mktemp("bench-smoke")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--smoke", "--out", str(out)],
        check=False,
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"bench smoke run failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    files = list(out.glob("*.jsonl"))
    assert [f.name for f in files] == ["cpu-triton-interpreter.jsonl"]
    return out, load_results(files[0]), done.stdout


@pytest.mark.interpreter
def test_smoke_rows_are_complete_and_checked(smoke_run):
    _, rows, stdout = smoke_run
    benches = {row["bench"] for row in rows}
    assert benches == set(BASELINES), stdout[-2000:]
    # symmetric and asymmetric W8A8 and W8A16, each against bf16
    assert {row["impl"] for row in rows if row["bench"] == "linear"} == {
        bench_linear.OURS, bench_linear.ASYMMETRIC, bench_linear.WEIGHT_ONLY, bench_linear.BF16}
    for row in rows:
        assert ROW_FIELDS <= row.keys(), ROW_FIELDS - row.keys()
        assert row["smoke"] is True and row["note"] == SMOKE_NOTE
        assert row["median_ms"] > 0 and row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
        assert row["check"], row
        assert row["goals"] is None  # smoke times judge nothing
    for bench in benches:
        ours = [row for row in rows if row["bench"] == bench and row["speedup"] is not None]
        assert ours, bench
        for row in ours:
            assert set(row["speedup"]) == BASELINES[bench]
            others = {r["impl"] for r in rows if r["bench"] == bench and r["run_id"] == row["run_id"]
                      and r["case"] == row["case"] and r["shape"] == row["shape"]}  # fmt: skip
            assert others - {row["impl"]} == {k for k, v in row["speedup"].items() if v is not None}


@pytest.mark.interpreter
def test_smoke_times_the_rotated_per_token_kernel(smoke_run):
    """The rotated per-token case (#28) runs, checked against torch ops, with the models' block."""
    _, rows, _ = smoke_run
    rotated = {(row["case"], tuple(row["shape"])) for row in rows
               if row["case"].startswith("quantize_per_token(hadamard")}
    assert rotated == {("quantize_per_token(hadamard_block=32)", (16, 96)),
                       ("quantize_per_token(hadamard_block=2)", (37, 130))}
    assert [bench_quantize.hadamard_block(k) for k in (4096, 14336, 1536, 576, 130, 7, 2**20)] == [
        4096, 2048, 512, 64, 2, 1, 16384]


@pytest.mark.interpreter
def test_smoke_int_mm_is_na_where_it_cannot_run(smoke_run):
    _, rows, _ = smoke_run
    seen = set()
    for row in rows:
        if row["bench"] == "matmul" and row["speedup"] is not None:
            m, n, k = row["shape"]
            runs = bench_matmul.int_mm_runs(m, n, k)
            assert (row["speedup"]["torch._int_mm+epilogue"] is not None) == runs, row["shape"]
            seen.add(runs)
    assert seen == {True, False}, "the smoke shapes must include one torch._int_mm runs and one it cannot"


@pytest.mark.interpreter
def test_plot_and_table_from_smoke_output(smoke_run, capsys):
    pytest.importorskip("matplotlib")
    out, rows, _ = smoke_run
    assert main(["plot", "--results", str(out)]) == 0
    png = out / "cpu-triton-interpreter.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["table", "--results", str(out)]) == 0
    table = capsys.readouterr().out
    assert "### cpu (Triton interpreter)" in table and SMOKE_NOTE in table
    qtriton_rows = [row for row in rows if row["speedup"] is not None]
    path_rows = [row for row in rows if row.get("ratio_vs") is not None]
    tables = len({row["bench"] for row in rows}) + bool(path_rows)  # a header and a rule line each
    assert path_rows and table.count("\n| ") - 2 * tables == len(qtriton_rows) + len(path_rows)
    for row in qtriton_rows + path_rows:
        assert "x".join(map(str, row["shape"])) in table
        assert f"| {row['impl']} |" in table  # the main loop / path is named on its line


def test_smoke_refuses_the_results_folder():
    with pytest.raises(SystemExit, match="never go to"):
        main(["quantize", "--smoke", "--out", str(REPO / "bench" / "results" / "smoke")])


def test_a_wrong_kernel_is_reported_not_timed(monkeypatch, capsys):
    ctx = _smoke_context()

    def off_by_one(granularity, axis, dequantize, dtype):
        right = bench_quantize._torch_fn(granularity, axis, dequantize, dtype)
        return lambda x: (right(x)[0].clamp(max=126) + 1, right(x)[1])

    monkeypatch.setattr(bench_quantize, "_qtriton_fn", off_by_one)
    rows = bench_quantize._bench_case(ctx, "quantize_per_token", "token", None, False, (8, 40), torch.float32)
    assert rows == []
    assert len(ctx.failures) == 1 and "codes" in ctx.failures[0]
    assert "FAILED, not timed" in capsys.readouterr().out


@pytest.mark.interpreter
def test_a_rotated_kernel_that_skips_the_rotation_is_reported(monkeypatch):
    """bench quantize times the rotated kernel beside the plain one; its check compares with
    the torch backend's rotation (bit for bit), so a kernel that skipped it is reported."""
    from qtriton.ops import quantize as ops

    plain = ops.quantize_per_token

    def without_rotation(x, num_bits=8, symmetric=True, *, include_zero=False, hadamard_block=None):
        return plain(x, num_bits, symmetric, include_zero=include_zero)

    names = [op[0] for op in bench_quantize._ops(full=False)]
    assert names[:2] == ["quantize_per_token", bench_quantize.ROTATED]
    ctx = _smoke_context()
    rows = bench_quantize._bench_case(ctx, names[1], "token", None, False, (8, 64), torch.float32)
    assert {row["impl"] for row in rows} == {"qtriton", "torch ops", "copy"} and not ctx.failures
    monkeypatch.setattr(ops, "quantize_per_token", without_rotation)
    rows = bench_quantize._bench_case(ctx, names[1], "token", None, False, (8, 64), torch.float32)
    assert rows == [] and ctx.failures


def test_a_wrong_gemm_is_reported_not_timed(monkeypatch):
    from qtriton.ops import matmul as ops

    ctx = _smoke_context()

    def exact(a, b):
        return torch.round(a.double() @ b.double()).to(torch.int32)

    monkeypatch.setattr(ops, "int8_matmul", lambda a, b: exact(a, b) + (a.shape[0] > 20))
    monkeypatch.setattr(bench_matmul, "_ours", lambda a, b, sa, sb: bench_matmul.epilogue(exact(a, b), sa, sb))
    assert bench_matmul._bench_case(ctx, 33, 16, 32) == []
    assert "int32 product" in ctx.failures[0]
    monkeypatch.setattr(ops, "int8_matmul", exact)  # and the same case passes once the product is right
    assert len(bench_matmul._bench_case(ctx, 33, 16, 32)) == 4


def test_cpu_bench_smoke_checks_and_prints_no_timings(capsys):
    """`python -m bench cpu --smoke`: one tiny layer, checked against the oracle; three calls
    time warm-up, so it prints no milliseconds and no speedup."""
    assert main(["cpu", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["# smoke: 1 case(s) ran and matched the oracle; no timings (run without --smoke)"]


def test_bench_help_lists_every_command(capsys):
    from bench.__main__ import _OWN_PARSERS

    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    for command in ("quantize", "matmul", "linear", "all", "tune", "static", "plot", "table", *_OWN_PARSERS):
        assert f"\n    {command} " in listing, command


@pytest.mark.slow  # ~30 s: a python -m bench process
def test_bench_host_measures_a_call_without_a_gpu():
    """python -m bench host: the host Python per GEMM call, launches stubbed, in a process
    whose kernels are compiled JITFunctions (no TRITON_INTERPRET): every row gets a time."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "bench", "host", "--calls", "3"], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = dict(line.rsplit(maxsplit=2)[:2] for line in done.stdout.splitlines() if line.endswith(" us"))
    assert {"gluon loop, autotuned", "tl.dot loop, autotuned, unchecked entry", "part: two TMA descriptors"} <= set(rows)
    assert all(float(us) > 0 for us in rows.values())


def test_cpu_bench_stops_on_a_wrong_layer(monkeypatch):
    import qtriton.torch_backend as torch_backend

    right = torch_backend.quantized_matmul
    monkeypatch.setattr(torch_backend, "quantized_matmul", lambda *args, **kwargs: right(*args, **kwargs) * 1.001)
    with pytest.raises(SystemExit, match="int8 sym output differs from the oracle"):
        main(["cpu", "--smoke"])


def test_checks_fail_on_a_single_wrong_element():
    ctx = _smoke_context()
    expected = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    wrong = expected.clone()
    wrong[2, 1] += 1
    assert checked(ctx, "exact", lambda: check_exact(wrong, expected, "x") or "ok") is None
    assert "(2, 1)" in ctx.failures[-1]
    assert checked(ctx, "close", lambda: check_close(wrong, expected, 0.01, 0.0, "x") or "ok") is None
    assert checked(ctx, "fine", lambda: check_close(expected * (1 + 1e-4), expected, 0.01, 0.0, "x") or "ok") == "ok"
    assert len(ctx.failures) == 2


@pytest.mark.parametrize(
    ("card", "peak", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", 1979.0, "nvidia-h100-80gb-hbm3"),
        ("NVIDIA H100 PCIe", 1513.0, "nvidia-h100-pcie"),
        ("NVIDIA H200", 1979.0, "nvidia-h200"),
        ("NVIDIA H100 NVL", None, "nvidia-h100-nvl"),
        ("NVIDIA A100-SXM4-80GB", None, "nvidia-a100-sxm4-80gb"),
    ],
)
def test_card_peak_and_slug(card, peak, slug):
    assert int8_peak_tops(card) == peak
    assert card_slug(card) == slug


def test_inputs_rotate_only_when_they_fit_in_l2():
    ctx = _smoke_context()
    ctx.smoke = False
    assert input_copies(ctx, 200 * 2**20) == 1
    assert input_copies(ctx, 10 * 2**20) == 10  # 10 copies of 10 MB: twice the 50 MB L2
    assert input_copies(ctx, 16) == 1024  # capped
    ctx.smoke = True
    assert input_copies(ctx, 16) == 1


def _row(**fields) -> dict:
    row = {
        "bench": "matmul", "case": "scaled_matmul", "shape": [4096, 4096, 4096], "dtype": "int8->bf16",
        "impl": "qtriton", "median_ms": 0.1, "p20_ms": 0.09, "p80_ms": 0.11, "metric": "TOPS",
        "value": 1374.4, "pct_peak": 69.4, "speedup": None, "goals": None, "card": "NVIDIA H100 80GB HBM3",
        "driver": "560.35", "cuda": "12.6", "torch": "2.11", "triton": "3.6", "python": "3.12",
        "commit": "abc123", "date": "2026-11-27T00:00:00Z", "run_id": "r1", "smoke": False,
    }  # fmt: skip
    return {**row, **fields}


def test_table_shows_ratios_na_and_goals(tmp_path):
    goals = [{"what": "speedup vs torch.mm bf16", "target": 1.7, "value": 1.52, "met": False}]
    rows = [
        _row(speedup={"torch._int_mm+epilogue": None, "torch.mm bf16": 1.52}, goals=goals),
        _row(impl="torch.mm bf16", dtype="bf16", metric="TFLOPS", value=904.2, pct_peak=None),
    ]
    table = markdown(rows)
    assert "#### 2026-11-27T00:00:00Z, commit abc123" in table
    line = next(line for line in table.splitlines() if line.startswith("| scaled_matmul"))
    assert "| n/a |" in line and "1.52x (904 TFLOPS)" in line and "**missed**" in line and "1374" in line
    assert line.startswith("| scaled_matmul | qtriton | 4096x4096x4096 |")
    assert "smoke" not in table

    doc = tmp_path / "performance.md"
    doc.write_text(f"# head\n\n{BEGIN}\nold\n{END}\ntail\n")
    write_into(doc, table)
    text = doc.read_text()
    assert "old" not in text and "1.52x" in text and text.startswith("# head") and text.endswith("tail\n")


def test_table_and_plot_tell_the_main_loops_and_paths_apart(tmp_path):
    """The tl.dot and Gluon rows of one case print apart (the impl column), and the path rows
    (no speedup, a ratio against the shape's reference path) reach the table and the plot."""
    ratios = {"torch._int_mm+epilogue": 1.1, "torch.mm bf16": 1.5}
    rows = [
        _row(speedup=ratios),
        _row(impl="qtriton (gluon loop)", speedup={**ratios, "qtriton": 1.25}, median_ms=0.08),
        _row(case="matmul_paths", impl="qtriton: B K-major", ratio_vs={"B K-major, gluon loop": 0.8},
             reference_path="B K-major"),
        _row(case="matmul_paths", impl="qtriton: B K-major, gluon loop", ratio_vs={"B K-major": 1.25},
             reference_path="B K-major", median_ms=0.08),
    ]
    table = markdown(rows)
    assert "| scaled_matmul | qtriton | 4096x4096x4096 |" in table
    gluon = next(line for line in table.splitlines() if line.startswith("| scaled_matmul | qtriton (gluon loop) |"))
    assert "| 1.25x" in gluon
    assert "| matmul_paths | 4096x4096x4096 | qtriton: B K-major | " in table and "1.00x vs B K-major" in table
    assert "| matmul_paths | 4096x4096x4096 | qtriton: B K-major, gluon loop |" in table
    assert "1.25x vs B K-major |" in table
    pytest.importorskip("matplotlib")
    from bench.common import append_results
    from bench.plot import plot_file

    png = plot_file(append_results(tmp_path, rows))
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_performance_doc_has_the_markers():
    text = (REPO / "docs" / "performance.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1


def test_gpu_check_script_parses():
    script = REPO / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gpu_check_declares_what_the_tests_import():
    """Every third-party module a test file or qtriton imports at module level is in
    gpu_check.sh's NEEDS (`--needs`): the run checks them before spending the window, and a
    missing one would otherwise drop a whole test file at collection (hypothesis: three)."""
    import ast

    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--needs"], check=True,
                          capture_output=True, text=True)
    needs = set(done.stdout.split())
    assert {"torch", "triton", "numpy", "pytest", "hypothesis"} <= needs
    local = {"qtriton", "bench", "tests", "conftest"}
    found = {}
    for path in [*(REPO / "tests").glob("*.py"), *(REPO / "qtriton").rglob("*.py"), *(REPO / "kernels").glob("*.py")]:
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are optional
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, path.name)
    missing = {name: where for name, where in found.items() if name not in needs}
    assert not missing, f"imported at module level but not in gpu_check.sh's NEEDS: {missing}"


def test_gpu_check_plan_fits_the_window():
    """The written time plan: the script's limits within one call's timeout, and two calls
    (a rerun on a fresh machine, start-up included) within 15 minutes of device time."""
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--plan"], check=True,
                          capture_output=True, text=True)
    import re

    total = int(re.search(r"total planned: (\d+)s", done.stdout).group(1))
    call = int(re.search(r"timeout_s=(\d+)", done.stdout).group(1))
    twice = int(re.search(r"brings it to (\d+)s of the (\d+)s window", done.stdout).group(1))
    assert total + 15 <= call and twice <= 900, done.stdout


@pytest.mark.slow  # ~30 s: a pytest process
def test_gpu_run_selects_the_tests_that_run_on_the_device():
    """gpu_check.sh runs `-m on_device`: kernel tests and users of the device fixture (the
    torch backend on CUDA tensors too), not the CPU-only ones CI has already run."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "on_device", "-p", "no:cacheprovider",
         "tests/test_api.py"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = {line for line in done.stdout.splitlines() if "::" in line}
    names = {i.split("::")[1].split("[")[0] for i in ids}
    assert "tests/test_api.py::test_per_token_matches_oracle[tensor-in-False-triton]" in ids  # kernels
    assert "tests/test_api.py::test_fake_quantize_keeps_dtype_and_matches_oracle[dtype0-True-torch]" in ids
    assert "test_forced_triton_moves_host_data_to_the_gpu_and_back" in names
    assert "test_bad_input_gets_a_clear_error" not in names and "test_returns_the_callers_kind" not in names


def test_results_rows_are_json_lines(tmp_path):
    from bench.common import append_results

    path = append_results(tmp_path, [_row(), _row(impl="torch.mm bf16")])
    assert path.name == "nvidia-h100-80gb-hbm3.jsonl"
    assert [json.loads(line)["impl"] for line in path.read_text().splitlines()] == ["qtriton", "torch.mm bf16"]


@pytest.mark.parametrize("spec, block", [("pow2", 64), ("b32", 32), ("full", 576), ("pow2R", 64), ("fullR", 576)])
def test_rotation_study_rotations_are_orthonormal_and_exact_on_float(rng, spec, block):
    """bench rotation's blocks (576 inputs: 9 blocks of 64, or one of 576 by compressed-tensors'
    order-144 construction) are orthonormal, and its float layer computes the Linear's output."""
    pytest.importorskip("compressed_tensors")
    from bench.rotation import RotatedLayer, rotation

    q = rotation(576, spec, seed=3)
    assert q.shape == (block, block)
    assert torch.allclose(q @ q.T, torch.eye(block, dtype=torch.float64), atol=1e-12)
    if spec in ("pow2", "b32", "full"):  # without random signs: the same matrix every time
        assert torch.equal(q, rotation(576, spec, seed=4))
    linear = torch.nn.Linear(576, 40)
    x = torch.from_numpy(rng.standard_normal((7, 576), dtype=np.float32))
    with torch.no_grad():
        expected = linear(x)
        got = RotatedLayer(linear, q, "float")(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max())), float((got - expected).abs().max())

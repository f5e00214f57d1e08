#!/usr/bin/env bash
# One command for a GPU machine lent for a few minutes: environment, the test suite on the
# GPU, GEMM tuning, the headline benchmarks, and a report, in under 8 minutes.
#
#   bash bench/gpu_check.sh [OUT_DIR]          (from anywhere; OUT_DIR defaults to $OUT, else ./gpu-check-out)
#
# Needs python3 with torch, triton, numpy and pytest (no network, no uv); pip and setuptools
# (any >= 61) for the install step. Each step has its own timeout and is logged; a failing
# step does not stop the next. At most 6 files land in OUT_DIR (8 come back from a lent machine):
#   summary.txt  step results and the markdown table of the results
#   tests.log    environment (nvidia-smi, versions), install, pytest --device cuda -m on_device (sharded)
#   bench.log    GEMM autotuning, python -m bench all --quick, plot and table
#   <card>.json  the tuned configs (commit to qtriton/configs/)
#   <card>.jsonl the benchmark results;  <card>.png  their plot
# Nothing is written into the checkout or the Python installation: the install step puts an
# editable install in a temporary folder that only this script's Python processes see.
# Exit status: the number of steps that failed or timed out (0: all passed).
# Step limits in seconds can be changed with GPU_CHECK_{TESTS,TUNE,BENCH}_S; GPU_CHECK_BUDGET_S
# (default 430) caps the steps before the report, each step getting at most what is left of it.
# GPU_CHECK_SHARDS: pytest processes for the tests (12); GPU_CHECK_DEVICE=cpu dry-runs the
# tests step in Triton's interpreter on a machine without a GPU (tune and bench then fail).
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
out="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$out" || exit 1
out="$(cd "$out" && pwd)"
py="${PYTHON:-python3}"
# qtriton.kernels lives in the top-level kernels/ folder and is importable only once installed
# (setuptools maps it). The install step puts an editable install in $site_dir; the
# sitecustomize.py in $startup_dir makes every Python below read that folder's .pth files. It
# shadows any sitecustomize of the Python itself (none on the usual installations).
scratch="$(mktemp -d "${TMPDIR:-/tmp}/qtriton-gpu-check.XXXXXX")" || exit 1
trap 'rm -rf "$scratch"' EXIT
site_dir="$scratch/site"
startup_dir="$scratch/startup"
mkdir -p "$site_dir" "$startup_dir"
printf 'import site\nsite.addsitedir(%s)\n' "'$site_dir'" >"$startup_dir/sitecustomize.py"
export PYTHONPATH="$repo:$startup_dir${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the GPU path, compiled kernels

budget="${GPU_CHECK_BUDGET_S:-430}"
summary="$out/summary.txt"
failed=0
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# step NAME LIMIT_S LOG COMMAND...: run with a timeout (never past the budget), log, record.
step() {
    local name=$1 limit=$2 log=$3 left rc start
    shift 3
    left=$((budget - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        note "$name: SKIPPED (budget of ${budget}s spent)"
        failed=$((failed + 1))
        return
    fi
    start=$SECONDS
    echo "### $name: $* (limit ${limit}s)" >>"$log"
    # bash -c: the steps below are shell functions, which timeout cannot run by itself
    timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" >>"$log" 2>&1
    rc=$?
    if ((rc == 0)); then
        note "$name: ok ($((SECONDS - start))s)"
    elif ((rc == 124 || rc == 137)); then
        note "$name: TIMED OUT after ${limit}s (see $(basename "$log"))"
        failed=$((failed + 1))
    else
        note "$name: FAILED, exit $rc ($((SECONDS - start))s; see $(basename "$log"))"
        failed=$((failed + 1))
    fi
}

environment() {
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi || echo "nvidia-smi failed"
    echo "commit: ${QTRITON_COMMIT:-$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
    "$py" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "triton", "numpy", "pytest", "matplotlib", "safetensors"):
    try:
        print(f"{name:12}", importlib.import_module(name).__version__)
    except Exception as err:  # report, never stop: this is the inventory
        print(f"{name:12} MISSING ({type(err).__name__}: {err})")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}

# An editable install into $site_dir (not the Python's own site-packages, not the checkout):
# qtriton.kernels then resolves to $repo/kernels, as the tests check.
install() {
    if "$py" -c "import qtriton.kernels" 2>/dev/null; then
        "$py" -c "import qtriton.kernels; print('qtriton.kernels already importable from', qtriton.kernels.__file__)"
        return 0
    fi
    "$py" -m pip --version || return 1
    "$py" -c "import setuptools; print('setuptools', setuptools.__version__)" || return 1
    "$py" -m pip install --no-deps --no-build-isolation --no-index --no-compile --disable-pip-version-check \
        --target "$site_dir" -e "$repo" || return 1
    "$py" -c "import qtriton.kernels; print('qtriton.kernels from', qtriton.kernels.__file__)"
}

tune() {
    "$py" -m bench tune --quick || return 1
    # The tuned file went to qtriton/configs/ (so the benchmark below uses it); keep a copy.
    local written
    written=$(tail -n 1 "$out/bench.log" | sed -n 's/^wrote //p')
    [[ -f $written ]] && cp "$written" "$out/"
}

# The tests that run on the device (`-m on_device`: kernel launches and users of the device
# fixture; CI has run the rest on CPU), in GPU_CHECK_SHARDS (12) pytest processes at once. A fresh
# machine compiles every kernel specialisation the suite launches (about 750, more with
# autotuning) and compilation is CPU-bound: one process would spend the step on one core.
# Contiguous chunks of the collected ids keep each file's specialisations in one process.
# Shard logs are appended to tests.log at the end, or when the step's timeout stops it.
device_tests() {
    local shards=${GPU_CHECK_SHARDS:-12} device=${GPU_CHECK_DEVICE:-cuda} ids=() pids=() per i rc=0
    local common=(--device "$device" -p no:cacheprovider --ignore=tests/test_static.py)
    mapfile -t ids < <("$py" -m pytest tests/ "${common[@]}" -m on_device --collect-only -q | grep '::')
    if ((${#ids[@]} == 0)); then
        echo "no test collected"
        return 1
    fi
    per=$(((${#ids[@]} + shards - 1) / shards))
    merge() {
        local log
        for log in "$scratch"/shard-*.log; do
            [[ -f $log ]] || continue
            echo "### $(basename "$log" .log)"
            cat "$log"
            echo
        done
    }
    trap 'kill "${pids[@]}" 2>/dev/null; merge; exit 124' TERM
    echo "${#ids[@]} tests in $(((${#ids[@]} + per - 1) / per)) shards"
    for ((i = 0; i * per < ${#ids[@]}; i++)); do
        "$py" -m pytest "${common[@]}" -q --maxfail=30 "${ids[@]:i*per:per}" >"$scratch/shard-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || rc=1
        echo "shard $i: $(tail -n 1 "$scratch/shard-$i.log")"
    done
    merge
    return "$rc"
}

report() {
    "$py" -m bench plot --results "$out" || echo "plot failed (matplotlib missing?)"
    { echo; "$py" -m bench table --results "$out"; } >>"$summary"
}

export -f environment install device_tests tune report note
export py out repo summary site_dir scratch

step environment 20 "$out/tests.log" environment
step install 60 "$out/tests.log" install
# Every device test, not up to the first failure (30 per shard): one early failure must not
# hide the rest of the GPU run. tests/test_static.py compiles for sm_90a offline: CI runs it.
step tests "${GPU_CHECK_TESTS_S:-180}" "$out/tests.log" device_tests
step tune "${GPU_CHECK_TUNE_S:-70}" "$out/bench.log" tune
step bench "${GPU_CHECK_BENCH_S:-120}" "$out/bench.log" "$py" -m bench all --quick --out "$out"
budget=$((SECONDS + 40))  # the report runs whatever is left: it is what the run is for
step report 30 "$out/bench.log" report

sed -n '/^### /,$p' "$summary"  # the results table, for whoever reads only this output
note "failed steps: $failed; total ${SECONDS}s; files in $out: $(ls "$out" | tr '\n' ' ')"
exit "$failed"

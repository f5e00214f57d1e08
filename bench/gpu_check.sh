#!/usr/bin/env bash
# One command for a GPU machine lent for a few minutes: what the run needs, the Gluon loop's
# first launch alone, the test suite on the GPU, the quick benchmarks (both GEMM main loops,
# every quantize kernel, the rotated one where the package has it), GEMM tuning and a report.
#
#   bash bench/gpu_check.sh [OUT_DIR]       from anywhere; OUT_DIR defaults to $OUT, else ./gpu-check-out
#   bash bench/gpu_check.sh --needs         the Python modules the run imports (check them against the
#                                           machine's package list before the device time starts)
#   bash bench/gpu_check.sh --plan          the time plan below, with its total
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh OUT_DIR
#                                           dry run on a machine without a GPU: every step's machinery,
#                                           the tests in Triton's interpreter (a few per shard), the
#                                           benchmarks' --smoke run; tune and the Gluon launch skipped
#
# Needs python3 with NEEDS below (no network, no uv); pip and setuptools (any >= 61) for the
# install step. Each step has its own time limit and log; a failing step does not stop the next
# (but a failed preflight stops the run: nothing after it could work).
#
# Time plan (a lent machine has 15 minutes of device time, its start-up included):
#   machine start                                   60-120 s
#   this script, one call with timeout_s=300:       <= 270 s (steps capped at GPU_CHECK_BUDGET_S=255,
#     preflight 20, install 15, gluon-first 40,       then the report in <= 15 s)
#     tests 90, bench 75, tune 15 (limits; the
#     budget cap squeezes the last steps), report 15
#   (tune runs after the benchmarks: their autotuning compiled the kernels it times, so it
#   only times them; the benchmarks autotune on first use what tune would have chosen)
#   copying the tree there and OUT back             ~20 s
#   one call: <= 120 + 300 + 20 = 440 s; a rerun on a fresh machine the same again: 880 s of 900.
#   A rerun within 30 s of the first call's end finds the machine warm (no start, Triton's cache
#   of compiled kernels kept): GPU_CHECK_STEPS=tests,bench reruns only what needs it.
#
# What lands where: at most 6 files in OUT_DIR (8 come back from a lent machine):
#   summary.txt  step results, the card and commit, the markdown tables of the results
#   tests.log    preflight (nvidia-smi, versions, NEEDS), install, the Gluon first launch,
#                pytest --device cuda -m on_device (sharded, the Gluon tests in their own shard)
#   bench.log    python -m bench all --quick, GEMM autotuning, plot and table
#   <card>.json  the tuned configs (commit to qtriton/configs/)
#   <card>.jsonl the benchmark results, every row with its card and commit (commit to bench/results/)
#   <card>.png   their plot
# In the checkout: the tune step writes qtriton/configs/<card>.json (the copy in OUT_DIR is
# what comes back). Nothing in the Python installation: the
# install step puts an editable install in a temporary folder only this script's Pythons see.
#
# The commit: $QTRITON_COMMIT, else the file .gpu-check-commit at the repository root (a copy
# without .git, as a lent machine's: write it on the host before the run, e.g.
#   { git rev-parse --short=12 HEAD; git diff --quiet HEAD || echo +dirty; } | tr -d '\n' > .gpu-check-commit
# it is git-ignored, so name it in the run's carry), else git, else "unknown".
#
# Exit status: the number of steps that failed or timed out (0: all passed; skipped steps count
# as passed). Step limits: GPU_CHECK_{PREFLIGHT,INSTALL,GLUON,TESTS,TUNE,BENCH}_S; the budget
# GPU_CHECK_BUDGET_S caps the steps before the report, each getting at most what is left.
# GPU_CHECK_STEPS: the steps to run (default preflight,install,gluon,tests,bench,tune).
# GPU_CHECK_SHARDS: pytest processes for the tests (16, one of them the Gluon tests'; the dry run 4);
# GPU_CHECK_TESTS_PER_SHARD: at most this many tests per shard (the dry run's default: 2); the dry
# run multiplies every limit by GPU_CHECK_DRY_SCALE (6).
set -u

# Every test file imports these at module level (hypothesis: test_edges, test_fuzz and
# test_properties), or qtriton does; a missing one drops a file from the run silently.
NEEDS=(torch triton numpy pytest hypothesis safetensors tqdm)
INSTALL_NEEDS=(pip setuptools)
OPTIONAL=(matplotlib pytest_timeout)  # the plot; a per-test limit in the Gluon shard
STEP_NAMES=(preflight install gluon tests bench tune)
declare -A LIMIT=(
    [preflight]=${GPU_CHECK_PREFLIGHT_S:-20} [install]=${GPU_CHECK_INSTALL_S:-15} [gluon]=${GPU_CHECK_GLUON_S:-40}
    [tests]=${GPU_CHECK_TESTS_S:-90} [bench]=${GPU_CHECK_BENCH_S:-75} [tune]=${GPU_CHECK_TUNE_S:-15}
)
REPORT_S=15
budget="${GPU_CHECK_BUDGET_S:-255}"
CALL_TIMEOUT_S=300
MACHINE_START_S=120
TRANSFER_S=20
DEVICE_WINDOW_S=900

plan() {
    local name total=0
    echo "time plan (limits, seconds):"
    for name in "${STEP_NAMES[@]}"; do
        printf '  %-10s %4d\n' "$name" "${LIMIT[$name]}"
        total=$((total + LIMIT[$name]))
    done
    ((total > budget)) && total=$budget
    printf '  %-10s %4d\n' report "$REPORT_S"
    total=$((total + REPORT_S))
    local call=$((MACHINE_START_S + CALL_TIMEOUT_S + TRANSFER_S))
    echo "total planned: ${total}s of this script (steps capped at ${budget}s, then the report), run as one call" \
        "with timeout_s=${CALL_TIMEOUT_S}; with the machine's start (${MACHINE_START_S}s) and transfers" \
        "(${TRANSFER_S}s) ${call}s; a rerun on a fresh machine brings it to $((2 * call))s of the" \
        "${DEVICE_WINDOW_S}s window"
}

case "${1:-}" in
--needs)
    printf '%s\n' "${NEEDS[@]}" "${INSTALL_NEEDS[@]}"
    exit 0
    ;;
--plan)
    plan
    exit 0
    ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
out="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$out" || exit 1
out="$(cd "$out" && pwd)"
py="${PYTHON:-python3}"
device="${GPU_CHECK_DEVICE:-cuda}"
steps=",${GPU_CHECK_STEPS:-preflight,install,gluon,tests,bench,tune},"
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
scale=1  # the limits' multiplier: the dry run's (GPU_CHECK_DRY_SCALE) on a CPU in the interpreter
if [[ $device == cpu ]]; then
    export TRITON_INTERPRET=1  # the dry run: the kernels in Triton's interpreter
    scale=${GPU_CHECK_DRY_SCALE:-6}
else
    unset TRITON_INTERPRET  # the GPU path, compiled kernels
fi
if [[ -z ${QTRITON_COMMIT:-} ]]; then
    if [[ -s $repo/.gpu-check-commit ]]; then
        QTRITON_COMMIT="$(tr -d '[:space:]' <"$repo/.gpu-check-commit")"
    else
        QTRITON_COMMIT="$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    fi
fi
export QTRITON_COMMIT  # bench/common.py records it in every results row

summary="$out/summary.txt"
failed=0
gluon_ok=1  # 0 once the Gluon loop's first launch failed: its tests and rows are left out
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# step NAME LOG COMMAND...: run with its limit (never past the budget), log, record. A
# command exiting 3 was not applicable here: SKIPPED, not failed.
step() {
    local name=$1 log=$2 limit left rc start
    shift 2
    limit=${LIMIT[$name]:-$REPORT_S}
    if [[ $name != report && $steps != *",$name,"* ]]; then
        note "$name: not asked for (GPU_CHECK_STEPS)"
        return 0
    fi
    limit=$((limit * scale))
    left=$((budget * scale - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        note "$name: SKIPPED (budget of $((budget * scale))s spent)"
        failed=$((failed + 1))
        return 1
    fi
    start=$SECONDS
    echo "### $name: $* (limit ${limit}s)" >>"$log"
    # bash -c: the steps below are shell functions, which timeout cannot run by itself
    timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" >>"$log" 2>&1
    rc=$?
    if ((rc == 0)); then
        note "$name: ok ($((SECONDS - start))s)"
    elif ((rc == 3)); then
        note "$name: SKIPPED, not applicable here ($(tail -n 1 "$log"))"
    elif ((rc == 124 || rc == 137)); then
        note "$name: TIMED OUT after ${limit}s (see $(basename "$log"))"
        failed=$((failed + 1))
    else
        note "$name: FAILED, exit $rc ($((SECONDS - start))s; see $(basename "$log"))"
        failed=$((failed + 1))
    fi
    return "$rc"
}

# What the run needs, before anything else spends the window: the machine, the versions, the
# modules (NEEDS: a missing one fails here, not as a test file dropped at collection).
# Arguments: the NEEDS, INSTALL_NEEDS and OPTIONAL lists, each one space-separated word
# (arrays do not cross into the `bash -c` that runs a step).
preflight() {
    local needs=($1) install_needs=($2) optional=($3)
    date -u +%Y-%m-%dT%H:%M:%SZ
    echo "commit: $QTRITON_COMMIT"
    if [[ $device == cuda ]]; then
        nvidia-smi || echo "nvidia-smi failed"
    fi
    "$py" - "$device" "${needs[@]}" -- "${install_needs[@]}" -- "${optional[@]}" <<'EOF'
import importlib, platform, sys

device, names = sys.argv[1], sys.argv[2:]
needs, rest = names[:names.index("--")], names[names.index("--") + 1:]
install, optional = rest[:rest.index("--")], rest[rest.index("--") + 1:]
print("python", platform.python_version(), sys.executable)
try:  # installed already: the install step needs neither pip nor setuptools
    importlib.import_module("qtriton.kernels")
    installed = True
except ImportError:
    installed = False
print("qtriton.kernels", "importable" if installed else "not importable yet: the install step needs pip, setuptools")
missing = []
for group, required in ((needs, True), (install, not installed), (optional, False)):
    for name in group:
        try:
            module = importlib.import_module(name)
            print(f"{name:16} {getattr(module, '__version__', 'present')}")
        except Exception as err:  # report every one, then fail once
            print(f"{name:16} MISSING ({type(err).__name__}: {err})")
            if required:
                missing.append(name)
import torch, triton

minimum = {"torch": (2, 5), "triton": (3, 6)}
for name, module in (("torch", torch), ("triton", triton)):
    version = tuple(int(part) for part in module.__version__.split("+")[0].split(".")[:2])
    if version < minimum[name]:
        missing.append(f"{name} >= {'.'.join(map(str, minimum[name]))} (have {module.__version__})")
cuda = torch.cuda.is_available()
print("cuda", torch.version.cuda, "available", cuda, torch.cuda.get_device_name(0) if cuda else "")
if device == "cuda" and not cuda:
    missing.append("a CUDA device visible to torch")
if missing:
    print("preflight: FAILED, missing:", ", ".join(missing))
    sys.exit(1)
print("preflight: ok")
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

# The Gluon loop's first launch, alone in its own process under the step's short limit: a hung
# mbarrier costs this step, not the suite (bench/gluon_first.py; exit 3: no sm_90 card / Gluon).
gluon_first() {
    "$py" -m bench.gluon_first
}

# The tests that run on the device (`-m on_device`: kernel launches and users of the device
# fixture; CI has run the rest on CPU) in GPU_CHECK_SHARDS pytest processes at once: a fresh
# machine compiles every kernel specialisation the suite launches and compilation is CPU-bound.
# Contiguous chunks of the collected ids keep each file's specialisations in one process; the
# Gluon tests (tests/test_matmul_gluon.py, ids naming gluon) run in a shard of their own under
# its own limit (GPU_CHECK_GLUON_SHARD_S) and, where pytest-timeout is installed, a per-test one,
# and not at all when the Gluon loop's first launch failed. A test file that fails to collect
# fails the step (its tests would otherwise drop out of the id list unseen); the rest still run.
# Shard logs are appended to tests.log at the end, or when the step's limit stops it.
device_tests() {
    local shards=${GPU_CHECK_SHARDS:-16} ids=() gluon=() rest=() pids=() names=() per i rc=0 collect_rc
    [[ -z ${GPU_CHECK_SHARDS:-} && $device == cpu ]] && shards=4  # the dry run's 2 cores
    local cap=${GPU_CHECK_TESTS_PER_SHARD:-}
    [[ -z $cap && $device == cpu ]] && cap=2  # the dry run exercises the machinery, not the suite
    local common=(--device "$device" -p no:cacheprovider --ignore=tests/test_static.py)
    "$py" -m pytest tests/ "${common[@]}" -m on_device --collect-only -q --continue-on-collection-errors \
        >"$scratch/collect.log" 2>&1
    collect_rc=$?
    mapfile -t ids < <(grep '::' "$scratch/collect.log")
    if ((collect_rc != 0)) || grep -qE '^(ERROR|E   )' "$scratch/collect.log"; then
        echo "collection FAILED (exit $collect_rc): these files' tests are not in the run:"
        grep -E '^ERROR|Error|error' "$scratch/collect.log" | head -n 40
        rc=1
    fi
    if ((${#ids[@]} == 0)); then
        echo "no test collected"
        tail -n 20 "$scratch/collect.log"
        return 1
    fi
    for i in "${ids[@]}"; do
        if [[ $i == tests/test_matmul_gluon.py::* || ${i,,} == *gluon* ]]; then gluon+=("$i"); else rest+=("$i"); fi
    done
    local take=${cap:-${#rest[@]}}
    per=$(((${#rest[@]} + shards - 2) / (shards - 1)))
    ((per < 1)) && per=1
    merge() {
        local name
        for name in "${names[@]}"; do
            [[ -f $scratch/$name.log ]] || continue
            echo "### $name"
            cat "$scratch/$name.log"
            echo
        done
    }
    trap 'kill "${pids[@]}" 2>/dev/null; merge; exit 124' TERM
    echo "${#ids[@]} tests: ${#gluon[@]} Gluon tests in a shard of their own, ${#rest[@]} in" \
        "$(((${#rest[@]} + per - 1) / per)) shards${cap:+ (at most $cap run per shard)}"
    if ((${#gluon[@]})); then
        if ((gluon_ok)); then
            local per_test=()
            # pytest-timeout registers itself through its entry point (as "timeout"): naming it with
            # -p as well fails pytest's start ("Plugin already registered"), so -p only when
            # autoloading is off.
            if "$py" -c "import pytest_timeout" 2>/dev/null; then
                per_test=(--timeout=60 --timeout-method=thread)
                [[ -n ${PYTEST_DISABLE_PLUGIN_AUTOLOAD:-} ]] && per_test=(-p pytest_timeout "${per_test[@]}")
            fi
            names+=(shard-gluon)
            timeout --kill-after=5 "$((${GPU_CHECK_GLUON_SHARD_S:-80} * scale))" "$py" -m pytest "${common[@]}" -q --maxfail=30 \
                "${per_test[@]}" "${gluon[@]:0:${cap:-${#gluon[@]}}}" >"$scratch/shard-gluon.log" 2>&1 &
            pids+=($!)
        else
            echo "Gluon shard: SKIPPED, the Gluon loop's first launch failed (see its step above)"
            rc=1
        fi
    fi
    for ((i = 0; i * per < ${#rest[@]}; i++)); do
        names+=("shard-$i")
        "$py" -m pytest "${common[@]}" -q --maxfail=30 "${rest[@]:i*per:$((per < take ? per : take))}" \
            >"$scratch/shard-$i.log" 2>&1 &
        pids+=($!)
    done
    local shard_rc
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}"
        shard_rc=$?
        ((shard_rc != 0)) && rc=1
        if ((shard_rc == 124 || shard_rc == 137)); then
            echo "${names[$i]}: TIMED OUT (its own limit), last line: $(tail -n 1 "$scratch/${names[$i]}.log")"
        else
            echo "${names[$i]}: $(tail -n 1 "$scratch/${names[$i]}.log")"
        fi
    done
    merge
    return "$rc"
}

# Autotune the tl.dot loop's pools for the headline shapes; bench tune prints "wrote PATH"
# (Triton may print more after it, e.g. nanobind's "leaked" lines at exit): the last such line
# names the file, copied into OUT_DIR.
tune() {
    if [[ $device == cpu ]]; then
        echo "tune: not applicable in the dry run (the autotuner times real launches)"
        return 3
    fi
    set -o pipefail
    "$py" -m bench tune --quick 2>&1 | tee "$scratch/tune.log" || return 1
    local written
    written=$(sed -n 's/^wrote //p' "$scratch/tune.log" | tail -n 1)
    [[ -n $written && -f $written ]] || { echo "tune: no 'wrote PATH' line"; return 1; }
    cp "$written" "$out/" && echo "copied $written to $out/"
}

bench() {
    ((gluon_ok)) || export QTRITON_BENCH_GLUON=0  # bench/matmul.py leaves the Gluon rows out
    if [[ $device == cpu ]]; then
        "$py" -m bench all --smoke --out "$out"
    else
        "$py" -m bench all --quick --out "$out"
    fi
}

# Plot and tables, and the check that every results row names its card and commit.
report() {
    "$py" -m bench plot --results "$out" || echo "plot failed (matplotlib missing?)"
    "$py" - "$out" <<'EOF' | tee -a "$summary"
import json, pathlib, sys

for path in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    unnamed = [row for row in rows if not row.get("card") or not row.get("commit") or row["commit"] == "unknown"]
    cards, commits = sorted({r.get("card") for r in rows}), sorted({str(r.get("commit")) for r in rows})
    print(f"{path.name}: {len(rows)} rows, card {cards}, commit {commits}"
          + (f"; {len(unnamed)} rows WITHOUT card or commit" if unnamed else ""))
EOF
    { echo; "$py" -m bench table --results "$out"; } >>"$summary"
}

export -f preflight install gluon_first device_tests tune bench report note
export py out repo summary site_dir scratch device scale

note "gpu_check: commit $QTRITON_COMMIT, device $device, budget ${budget}s"
plan | tee -a "$summary"
if ! step preflight "$out/tests.log" preflight "${NEEDS[*]}" "${INSTALL_NEEDS[*]}" "${OPTIONAL[*]}"; then
    [[ $steps == *",preflight,"* ]] && { note "preflight failed: nothing after it can run"; exit "$failed"; }
fi
step install "$out/tests.log" install
step gluon "$out/tests.log" gluon_first
rc=$?
((rc != 0 && rc != 3)) && [[ $steps == *",gluon,"* ]] && gluon_ok=0
export gluon_ok
step tests "$out/tests.log" device_tests
step bench "$out/bench.log" bench
step tune "$out/bench.log" tune
budget=$(((SECONDS + 5) / scale + REPORT_S))  # the report runs whatever is left: it is what the run is for
step report "$out/bench.log" report

sed -n '/^### /,$p' "$summary"  # the results table, for whoever reads only this output
note "failed steps: $failed; total ${SECONDS}s; files in $out: $(ls "$out" | tr '\n' ' ')"
exit "$failed"

"""Static Hopper checks: every production kernel, as the package's launchers launch it,
compiles for sm_90a with Triton's compiler and bundled ptxas (no GPU, no driver) within
Hopper's limits (bench/static.py; `python -m bench static` runs the full sweep).

The compiles run in a subprocess: this test session imported qtriton.kernels under
TRITON_INTERPRET=1, so its kernels are interpreted, not compiled."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import static
from bench.static import Compiled, check

ROOT = Path(__file__).resolve().parents[1]

# A config no pool holds: a 256 x 256 int32 accumulator over 4 warps is 512 registers a
# thread, twice what a thread has; ptxas must spill.
PLANTED_SPILL = {"BLOCK_SIZE_M": 256, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 64, "num_warps": 4, "num_stages": 2}
PLANTED_VARIANT = r"^gemm int8 row/col scales -> bf16, B nk$"

_SCRIPT = """
import dataclasses, json, sys
from bench import static
subset = static.compile_all(full=False)
planted = static.compile_all(only=sys.argv[1], configs=[json.loads(sys.argv[2])])
variants = sorted({f"{v.family} {v.name}" for v, _, _ in static.cases(full=False)})
print("JSON" + json.dumps({"subset": [dataclasses.asdict(r) for r in subset],
                           "planted": [dataclasses.asdict(r) for r in planted], "variants": variants}))
"""


def _has_nvidia_backend() -> bool:
    try:
        from triton.backends.nvidia import compiler
    except ImportError:
        return False
    return Path(compiler.__file__).parent.joinpath("bin", "cuobjdump").is_file()


pytestmark = pytest.mark.skipif(not _has_nvidia_backend(), reason="this triton has no NVIDIA backend with ptxas")


@pytest.fixture(scope="module")
def compiled() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, PLANTED_VARIANT, json.dumps(PLANTED_SPILL)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("JSON")]
    data = json.loads(line.removeprefix("JSON"))
    data["subset"] = [Compiled(**row) for row in data["subset"]]
    data["planted"] = [Compiled(**row) for row in data["planted"]]
    return data


def test_every_variant_compiles_within_sm90_limits(compiled):
    rows = compiled["subset"]
    assert {f"{row.family} {row.variant}" for row in rows} == set(compiled["variants"])
    found, known = check(rows)
    assert not found, "\n".join(found)
    # Every GEMM variant ran under each M bucket's pool; the quantize launchers reach every kernel.
    kernels = {row.kernel for row in rows}
    assert {"_int8_matmul_kernel", "_quantize_rows_kernel", "_quantize_channels_kernel",
            "_tensor_range_partials_kernel", "_tensor_params_kernel", "_quantize_tensor_kernel",
            "_dequantize_kernel"} <= kernels
    gemm = [row for row in rows if row.family == "gemm"]
    assert {row.block_m for row in gemm} >= {16, 64, 128}
    assert all(row.registers > 0 for row in gemm)
    # The GEMM itself stages tiles in shared memory (its helpers: sums, copies, split-K reduce need none).
    assert all(row.shared_bytes > 0 for row in gemm if row.kernel == "_int8_matmul_kernel")
    assert {row.int8_dot for row in gemm if row.kernel == "_int8_matmul_kernel"} == {"wgmma", "mma.sync"}


def test_gluon_loop_keeps_a_wgmma_group_in_flight_with_tma(compiled):
    """Every Gluon variant ran the Gluon kernel (not the tl.dot fallback), and its K loop waits
    with >= 1 wgmma group in flight, loads through TMA and does not spill (the check's rules,
    asserted here on the rows themselves so that an empty selection cannot pass)."""
    from qtriton.ops import configs

    if not configs.gluon_available():
        pytest.skip("this Triton has no Gluon: the launcher runs the tl.dot loop for the gluon variants")
    rows = compiled["subset"]
    gluon_variants = {name.removeprefix("gemm ") for name in compiled["variants"] if name.startswith("gemm gluon")}
    assert len(gluon_variants) >= 7
    gluon = [row for row in rows if row.kernel == static.GLUON_KERNEL]
    assert {row.variant for row in gluon} == gluon_variants
    assert not [row for row in rows if row.variant in gluon_variants and row.kernel == "_int8_matmul_kernel"]
    for row in gluon:
        assert row.error == "" and row.int8_dot == "wgmma" and row.tma, row
        assert row.wait_depth is not None and row.wait_depth >= static.GLUON_MIN_WAIT_DEPTH, row
        assert row.spill_bytes == 0 and 0 < row.loop_sass and row.ctas_per_sm >= 1, row
        # The K loop refills a slot (two TMA loads) only after a CTA barrier follows its wait.
        assert row.loop_tma_loads >= 2 and row.unguarded_refills == 0 and row.loop_barriers >= 1, row
    # The clamped tiles (narrow N, short K: 32/64-byte swizzles, wgmma N 16-64) compile too.
    clamped = {row.config.split(" w")[0] for row in gluon if row.variant.startswith("gluon clamped:")}
    assert clamped == {f"M{c.kwargs['BLOCK_SIZE_M']} N{c.kwargs['BLOCK_SIZE_N']} K{c.kwargs['BLOCK_SIZE_K']}"
                       for c in (configs.gluon_configs_for(*shape)[0] for shape in static.GLUON_SMALL_SHAPES)}
    assert {"M128 N16 K32", "M128 N32 K64", "M128 N64 K64"} <= clamped
    # Every Gluon config, in one variant: the CI check covers the whole pool.
    every = {row.config for row in gluon if row.variant == static.GLUON_EVERY_CONFIG}
    pool = configs.gluon_configs_for(*static.GEMM_SHAPES["large"])
    assert len(every) == len(pool) == len(configs.GLUON_CONFIGS)
    # The tl.dot loop's wgmma tiles have a wait in their K loop too: the column is measured there.
    tl_wgmma = [row for row in rows if row.kernel == "_int8_matmul_kernel" and row.int8_dot == "wgmma"]
    assert tl_wgmma and all(row.wait_depth is not None for row in tl_wgmma)


def test_known_violations_are_still_seen(compiled):
    # A KNOWN_VIOLATIONS entry that no longer matches anything is stale: delete it, so the
    # check is strict again for that variant.
    _, known = check(compiled["subset"])
    for pattern, rule in static.KNOWN_VIOLATIONS:
        assert any(line.startswith(f"{rule}:") for line in known), f"stale KNOWN_VIOLATIONS entry {pattern!r} ({rule})"


def test_check_fails_on_a_planted_spill(compiled):
    (row,) = [row for row in compiled["planted"] if row.kernel == "_int8_matmul_kernel"]
    assert row.error == "" and row.block_m == 256
    assert row.spill_bytes > 0, row
    found, known = check([row])
    assert any(line.startswith("spills:") for line in found), found
    assert not known


def test_check_rules_on_made_up_rows():
    def row(**changes):
        base = dict(family="gemm", variant="int8 -> int32, B nk", kernel="k", config="M128 N128 K128 w8 s3",
                    block_m=128, picked_by_int8_linear=True, registers=128, spill_bytes=0,
                    shared_bytes=64 * 1024, f64_instructions=0, int8_dot="wgmma", global_loads_128=True)
        return Compiled(**{**base, **changes})

    assert check([row()]) == ([], [])
    assert check([row(picked_by_int8_linear=False, spill_bytes=64)]) == ([], [])
    for changes, rule in [
        (dict(spill_bytes=8), "spills"),
        (dict(shared_bytes=227 * 1024), "shared"),
        (dict(int8_dot="mma.sync"), "wgmma"),
        (dict(error="CompilationError: out of resources"), "compiles"),
        (dict(family="quantize", block_m=1, int8_dot="none", global_loads_128=False), "loads"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=0, tma=True, loop_tma_loads=2), "wait"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=None, tma=True, loop_tma_loads=2), "wait"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=1, tma=False, loop_tma_loads=2), "tma"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=1, tma=True, loop_tma_loads=2, picked_by_int8_linear=False,
              spill_bytes=4), "spills"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=1, tma=True, loop_tma_loads=2, unguarded_refills=1), "barrier"),
        (dict(kernel=static.GLUON_KERNEL, wait_depth=1, tma=True, loop_tma_loads=0), "barrier"),
    ]:
        found, _ = check([row(**changes)])
        assert [line.split(":")[0] for line in found] == [rule], (changes, found)
    assert check([row(kernel=static.GLUON_KERNEL, wait_depth=1, tma=True, loop_tma_loads=2)]) == ([], [])
    # A quantize kernel with an FMA rounds a multiply and an add once, where the oracle rounds twice.
    found, _ = check([row(family="quantize", block_m=1, int8_dot="none", fma_instructions=16)])
    assert [line.split(":")[0] for line in found] == ["fma"]
    # A rotated per-token kernel against its unrotated partner, per element.
    rotated, plain_name = next(iter(static.ROTATION_PAIRS.items()))
    quantize = dict(family="quantize", block_m=1, int8_dot="none", num_warps=8, tile_elements=4096)
    plain = row(variant=plain_name, body_sass=64, **quantize)  # 64 x 32 lanes x 8 warps / 4096 = 4.0 per element
    assert plain.sass_per_element == 4.0
    for body_sass, rules in [(128, []), (129, ["rotation"])]:
        found, _ = check([plain, row(variant=rotated, body_sass=body_sass, **quantize)])
        assert [line.split(":")[0] for line in found] == rules
    assert row(variant=rotated, body_sass=129, loop_sass=10, **quantize).sass_per_element is None
    assert check([row(block_m=16, int8_dot="mma.sync")]) == ([], [])  # mma.sync is right for decode tiles
    assert check([row(block_m=128, int8_dot="none")]) == ([], [])  # a GEMM helper kernel without a dot
    # The asymmetric-activation variants (Int8Linear: int8 A + zp) are held to the same rule.
    found, known = check([row(variant="int8 A + zp per row + bias -> bf16, B nk", spill_bytes=300)])
    assert [line.split(":")[0] for line in found] == ["spills"] and not known
    # Its K loop against the plain int8 GEMM's in the same config (issue #11's 25 %).
    plain = row(variant="int8 + bias -> bf16, B nk", loop_sass=100)
    for loop_sass, rules in [(125, []), (126, ["loop"])]:
        asymmetric = row(variant="int8 A + zp per row + bias -> bf16, B nk", loop_sass=loop_sass)
        assert [line.split(":")[0] for line in check([plain, asymmetric])[0]] == rules
        assert check([plain, dataclasses.replace(asymmetric, config="M64 N64 K128 w4 s3")]) == ([], [])


def test_rotated_per_token_kernels(compiled):
    """Every rotated per-token variant (#28) ran the row kernel with its Hadamard block, with
    no spill, no f64, no FMA and 128-bit loads; against the same call unrotated, more SASS
    per element (the butterflies are compiled in) but at most ROTATION_RATIO_LIMIT times as
    many (the check's rule, asserted on the rows so that an empty selection cannot pass)."""
    rows = {row.variant: row for row in compiled["subset"] if row.kernel == "_quantize_rows_kernel"}
    rotated = [row for name, row in rows.items() if "hadamard" in name]
    assert len(rotated) == 18
    for row in rotated:
        block = int(row.variant.split("hadamard ")[1].split()[0])
        assert f"H{block}" in row.config.split(), row
        assert (row.spill_bytes, row.f64_instructions, row.fma_instructions) == (0, 0, 0), row
        assert row.global_loads_128 and row.shared_bytes > 0, row
    assert set(static.ROTATION_PAIRS) | set(static.ROTATION_PAIRS.values()) <= set(rows)
    for variant, plain in static.ROTATION_PAIRS.items():
        ratio = rows[variant].sass_per_element / rows[plain].sass_per_element
        assert 1.2 < ratio <= static.ROTATION_RATIO_LIMIT, (variant, ratio)
    assert all("H" not in row.config for name, row in rows.items() if "hadamard" not in name)


def test_body_instructions_stop_at_the_last_exit():
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   FADD R2, R3, R4 ;
        /*0020*/              @!P0 EXIT ;
        /*0030*/                   FADD R2, R2, R4 ;
        /*0040*/                   EXIT ;
        /*0050*/                   MUFU.RCP R5, R6 ;
        /*0060*/                   RET.REL.NODEC R10 0x0 ;
    """
    assert static.body_instructions(sass) == 5
    assert static.body_instructions(sass.replace("EXIT", "NOP")) == 7


def test_loop_rule_pairs_exist_for_decode_and_prefill_tiles(compiled):
    """The pairs the loop rule compares exist in the subset, with loops found, for decode and
    prefill tiles: the rule is not vacuous."""
    rows = {(r.variant, r.kernel, r.config): r.loop_sass for r in compiled["subset"] if not r.error}
    pairs = [(loops, rows[(static.LOOP_PAIRS[variant], kernel, config)], config)
             for (variant, kernel, config), loops in rows.items()
             if variant in static.LOOP_PAIRS and kernel == "_int8_matmul_kernel"]
    assert {config.split()[0] for _, _, config in pairs} >= {"M16", "M128"}, pairs
    assert all(plain > 0 and loops > 0 for loops, plain, _ in pairs), pairs


def test_loop_span_skips_out_of_line_code_and_reads_the_wait():
    # Shaped like the Gluon kernel's SASS: the K loop (0x100-0x140) waits with 1 in flight,
    # its mbarrier wait retries out of line after the last EXIT and branches back (0x1b0).
    sass = """
        /*0100*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR10+0x30000], R0 ;
        /*0110*/              @!P0 BRA 0x1a0 ;
        /*0120*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0130*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0140*/               @P0 BRA 0x100 ;
        /*0150*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0160*/              @!P0 EXIT ;
        /*0190*/                   EXIT ;
        /*01a0*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR10+0x30000], R0 ;
        /*01b0*/                   BRA 0x120 ;
        /*01c0*/                   BRA 0x1c0;
    """
    assert static.loop_span(sass) == (0x100, 0x140)
    assert static.longest_loop(sass) == 5
    assert static.loop_wait_depth(sass) == 1
    assert static.loop_wait_depth(sass.replace("gsb0, 0x1", "gsb0, 0x0")) == 0
    assert static.loop_wait_depth(sass.replace("WARPGROUP.DEPBAR.LE gsb0, 0x1", "NOP")) is None
    assert static.loop_span("/*0000*/ EXIT ;") is None and static.longest_loop("") == 0


def test_refill_barriers_find_a_missing_barrier():
    """Shaped like the Gluon K loop's SASS (triton 3.9, 128 x 256 x 128): the wait, then the
    CTA barrier, the expect and the two TMA loads each behind a barrier of Triton's own. The
    rule holds with one barrier between the wait and the loads, and fails without it or with
    the barrier before the wait."""
    loop = """
        /*1b10*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR10+0x30000], R0 ;
        /*1b20*/              @!P0 BRA 0x2200 ;
        /*1b30*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*1b40*/                   IGMMA.64x128x32.S8.S8 R24, gdesc[UR20], R24, gsb0 ;
        /*1b50*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*1b60*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*1b70*/               @P2 SYNCS.ARRIVE.TRANS64 RZ, [UR5+0x30000], R0 ;
        /*1b80*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*1b90*/                   @UP0 UTMALDG.2D [UR16], [UR6] ;
        /*1ba0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*1bb0*/                   @UP1 UTMALDG.2D [UR12], [UR10] ;
        /*1bc0*/               @P0 BRA 0x1b10 ;
        /*1bd0*/                   EXIT ;
        /*2200*/                   BRA 0x1b30 ;
    """
    assert static.refill_barriers(loop) == (2, 0, 4)

    def without(text, *addresses):
        for address in addresses:
            text = text.replace(f"/*{address}*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;",
                                f"/*{address}*/                   NOP ;")
        return text

    assert static.refill_barriers(without(loop, "1b60")) == (2, 0, 3)  # the barrier before load 1 is after the wait
    assert static.refill_barriers(without(loop, "1b60", "1b80")) == (2, 1, 2)  # load 1 unguarded, load 2 guarded
    assert static.refill_barriers(without(loop, "1b60", "1b80", "1ba0")) == (2, 2, 1)  # only one before the wait
    assert static.refill_barriers(loop.replace("WARPGROUP.DEPBAR.LE gsb0, 0x1", "NOP")) == (2, 2, 4)  # no wait
    named = loop.replace("BAR.SYNC.DEFER_BLOCKING 0x0 ;", "BAR.SYNC.DEFER_BLOCKING 0x1, 0x80 ;")
    assert static.refill_barriers(named)[1] == 2  # a named barrier over 128 threads is no CTA barrier


def test_ctas_per_sm():
    # 128 x 256 Gluon tile: 192 KB of ring -> 1; a small kernel is held by warp slots / the CTA cap.
    assert static.ctas_per_sm(registers=228, shared_bytes=192 * 1024, num_warps=8) == 1
    assert static.ctas_per_sm(registers=128, shared_bytes=96 * 1024, num_warps=4) == 2
    assert static.ctas_per_sm(registers=168, shared_bytes=0, num_warps=8) == 1  # 168 * 256 > 32 K registers
    assert static.ctas_per_sm(registers=32, shared_bytes=0, num_warps=4) == 16  # 64 warps / 4
    assert static.ctas_per_sm(registers=16, shared_bytes=0, num_warps=1) == 32


def test_ptx_patterns():
    assert static._WGMMA_S8.search("wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {%r1}, %rd2, %rd3;")
    assert not static._WGMMA_S8.search("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%r1}, ...;")
    assert static._MMA_SYNC_S8.search("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%r1}, ...;")
    assert static._LOAD_128.search("ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];")
    assert static._LOAD_128.search("cp.async.cg.shared.global [ %r5 + 0 ], [ %rd9 + 0 ], 0x10, %r7;")
    assert not static._LOAD_128.search("cp.async.ca.shared.global [ %r5 + 0 ], [ %rd9 + 0 ], 0x8, %r7;")
    assert not static._LOAD_128.search("ld.global.b32 { %r1 }, [ %rd1 + 0 ];")
    assert static._TMA.search("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], ...;")
    assert not static._TMA.search("cp.async.bulk.shared::cluster.global [%r1], [%rd1], 16, [%r2];")
    assert len(static._F64.findall("\tcvt.f64.f32 %fd1, %f1;\n\tadd.f32 %f2, %f1, %f1;\n\tmul.rn.f64 %fd2, %fd1, %fd1;")) == 2
    assert len(static._FMA_F32.findall("\tfma.rn.f32 %f3, %f1, %f2, %f4;\n\tmul.rn.f32 %f5, %f1, %f2;\n"
                                       "\tadd.rn.f32 %f6, %f5, %f4;\n\tfma.rn.ftz.f32 %f7, %f1, %f2, %f4;")) == 2


def test_refuses_interpreted_kernels():
    # This session's kernels were decorated under TRITON_INTERPRET=1 (conftest): nothing to compile.
    assert os.environ.get("TRITON_INTERPRET") == "1"
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        with static.compile_launches():
            pass

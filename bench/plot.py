"""Bar charts of qtriton's speedup over each baseline, one PNG per results file (card),
written next to it: <card-slug>.png, from that card's latest run. Bars are labelled with the
implementation (the GEMM's main loop: `qtriton`, `qtriton (gluon loop)`), and the GEMM's
paths (split-K, B's layout, each main loop) get a panel of their own: each path's speed
against its shape's reference path."""

from __future__ import annotations

from pathlib import Path

from bench.common import SMOKE_NOTE, load_results, result_files
from bench.table import BENCH_ORDER, path_ratio

PATHS = "matmul paths"


def plot_file(path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_results(path)
    if not rows:
        return None
    latest = max(row["run_id"] for row in rows)
    ours = [row for row in rows if row["run_id"] == latest and row.get("speedup") is not None]
    # Path rows as rows of ours, their one "baseline" the shape's reference path.
    ours += [{**row, "bench": PATHS, "case": "", "dtype": "",
              "impl": f"{row['impl'].removeprefix('qtriton: ')} vs {row['reference_path']}",
              "speedup": {"the shape's reference path": path_ratio(row)}}
             for row in rows if row["run_id"] == latest and row.get("ratio_vs") is not None
             and not row["impl"].endswith(f": {row['reference_path']}")]
    benches = [bench for bench in (*BENCH_ORDER, PATHS) if any(row["bench"] == bench for row in ours)]
    if not benches:
        return None
    heights = [max(2.0, 0.35 * len([r for r in ours if r["bench"] == b]) + 1.2) for b in benches]
    fig, axes = plt.subplots(len(benches), 1, figsize=(10, sum(heights)), height_ratios=heights, squeeze=False)
    for ax, bench in zip(axes[:, 0], benches):
        bench_rows = [row for row in ours if row["bench"] == bench]
        baselines: list[str] = []
        for row in bench_rows:
            baselines += [name for name in row["speedup"] if name not in baselines]
        labels = [" ".join(part for part in (row["impl"], row["case"], "x".join(map(str, row["shape"])), row["dtype"])
                           if part) for row in bench_rows]
        width = 0.8 / len(baselines)
        for i, name in enumerate(baselines):
            ratios = [row["speedup"].get(name) for row in bench_rows]
            ys = [j + (i - (len(baselines) - 1) / 2) * width for j in range(len(bench_rows))]
            ax.barh(ys, [r if r is not None else 0.0 for r in ratios], height=width, label=f"vs {name}")
            for y, ratio in zip(ys, ratios):
                if ratio is None:  # the baseline cannot run this shape
                    ax.text(0.01, y, "n/a", va="center", fontsize=6)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(bench_rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("speedup of qtriton (baseline time / qtriton time; > 1 is faster)")
        ax.set_title(bench)
        ax.legend(fontsize=7, loc="lower right")
    first = ours[0]
    note = f" - {SMOKE_NOTE}" if first.get("smoke") else ""
    fig.suptitle(f"{first['card']}, {first['date']}, commit {first.get('commit') or 'unknown'}{note}", fontsize=9)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_all(results: Path) -> list[Path]:
    return [png for path in result_files(results) if (png := plot_file(path)) is not None]

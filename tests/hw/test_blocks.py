"""Small gateware blocks under Amaranth's own simulator, against fpga.golden."""

import numpy as np
from amaranth.sim import Simulator

from fpga import golden
from hw.array import MacArray
from hw.requant import Requantizer


def test_mac_array_column_sums():
    rows, cols = 4, 3
    dut = MacArray(rows, cols)
    rng = np.random.default_rng(3)
    vectors = [
        (rng.integers(-128, 128, rows), rng.integers(-128, 128, rows * cols)) for _ in range(20)
    ]
    seen = []

    async def bench(ctx):
        for act, weight in vectors:
            for r in range(rows):
                ctx.set(dut.act[r], int(act[r]))
            for i in range(rows * cols):
                ctx.set(dut.weight[i], int(weight[i]))
            ctx.set(dut.valid, 1)
            await ctx.tick()
            if ctx.get(dut.sums_valid):
                seen.append([ctx.get(dut.column_sums[c]) for c in range(cols)])
        ctx.set(dut.valid, 0)
        for _ in range(3):
            await ctx.tick()
            if ctx.get(dut.sums_valid):
                seen.append([ctx.get(dut.column_sums[c]) for c in range(cols)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [
        list((act[:, None] * weight.reshape(rows, cols)).sum(axis=0)) for act, weight in vectors
    ]
    assert seen == expected


def test_requantizer_matches_golden():
    dut = Requantizer()
    rng = np.random.default_rng(4)
    cases = []
    for _ in range(300):
        acc = int(rng.integers(-(2**31), 2**31))
        mult = int(rng.integers(0, 2**16))
        shift = int(rng.integers(0, 48))
        relu = bool(rng.integers(0, 2))
        cases.append((acc, mult, shift, relu))
    cases += [(-3, 1, 1, False), (3, 1, 1, False), (-1, 1, 1, False), (2**31 - 1, 65535, 0, False)]
    got = []

    async def bench(ctx):
        for acc, mult, shift, relu in cases:
            ctx.set(dut.acc, acc)
            ctx.set(dut.multiplier, mult)
            ctx.set(dut.shift, shift)
            ctx.set(dut.relu, relu)
            ctx.set(dut.valid, 1)
            await ctx.tick()
            if ctx.get(dut.result_valid):
                got.append(ctx.get(dut.result))
        ctx.set(dut.valid, 0)
        for _ in range(3):
            await ctx.tick()
            if ctx.get(dut.result_valid):
                got.append(ctx.get(dut.result))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [
        int(golden.requantize(np.array([acc]), np.array([m]), np.array([s]), relu)[0])
        for acc, m, s, relu in cases
    ]
    assert got == expected

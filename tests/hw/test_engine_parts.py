"""The engine's CONV blocks alone (hw.engine.parts) under Amaranth's simulator, against
fpga.spec.golden, each at its exported latency (the cycle model's figure)."""

import numpy as np
from amaranth.sim import Simulator

from fpga.spec import golden
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import ACCUMULATOR_LATENCY, WEIGHT_DECODE_LATENCY, transfer_bytes
from hw.engine.parts import Accumulator, WeightDecoder

CONFIG = DEFAULT_CONFIG.replace(rows=4, cols=4)  # small: quick to simulate, same structure


def test_weight_decoder_turns_index_chunks_into_weights():
    """A random codebook written through the host port, then a random mix (as the engine's
    one write port carries them) of index chunks (word, byte enables, indices), codebook
    writes and idle cycles: every chunk comes out ``latency`` cycles later with its word and
    enables and ``codebook[index]`` per lane, under every codebook write before it and none
    after it."""
    dut = WeightDecoder(CONFIG)
    assert dut.latency == WEIGHT_DECODE_LATENCY
    lanes = transfer_bytes(CONFIG)
    assert dut.lanes == lanes
    rng = np.random.default_rng(21)
    codebook = rng.integers(-128, 128, 256)
    expected, seen = [], []

    async def bench(ctx):
        ctx.set(dut.codebook_en, 1)
        for address, value in enumerate(codebook):
            ctx.set(dut.codebook_addr, address)
            ctx.set(dut.codebook_data, int(value))
            await ctx.tick()
        table = codebook.copy()
        cycles = 200
        for cycle in range(cycles + dut.latency):
            kind = int(rng.integers(0, 3)) if cycle < cycles else 2
            ctx.set(dut.indices.valid, kind == 0)
            ctx.set(dut.codebook_en, kind == 1)
            if kind == 0:  # a chunk; its indices favour a few entries that get rewritten
                addr = int(rng.integers(0, CONFIG.weight_words))
                enable = int(rng.integers(0, 2**CONFIG.pes))
                indices = rng.integers(0, 8, lanes)
                ctx.set(dut.indices.payload.addr, addr)
                ctx.set(dut.indices.payload.enable, enable)
                for i in range(lanes):
                    ctx.set(dut.indices.payload.lanes[i], int(indices[i]))
                expected.append((addr, enable, table[indices].tolist()))
            elif kind == 1:  # a codebook write
                entry, value = int(rng.integers(0, 8)), int(rng.integers(-128, 128))
                ctx.set(dut.codebook_addr, entry)
                ctx.set(dut.codebook_data, value)
                table[entry] = value
            await ctx.tick()
            if ctx.get(dut.weights.valid):
                out = dut.weights.payload
                seen.append(
                    (
                        ctx.get(out.addr),
                        ctx.get(out.enable),
                        [ctx.get(out.lanes[i]) for i in range(lanes)],
                    )
                )

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(expected) > 40
    assert seen == expected


def test_accumulator_equals_golden_requantize():
    """Pixels of 1..9 taps (random column sums, gaps between taps), random per-channel bias,
    multiplier, shift and ReLU: each pixel's output word is ``golden.requantize(bias + sum of
    its taps)`` at its address, ``latency`` cycles after its last tap."""
    dut = Accumulator(CONFIG)
    assert dut.latency == ACCUMULATOR_LATENCY
    cols = CONFIG.cols
    rng = np.random.default_rng(22)
    blocks = 3
    bias = rng.integers(-(2**20), 2**20, (blocks, cols))
    multiplier = rng.integers(0, 2**16, (blocks, cols))
    shift = rng.integers(8, golden.MAX_SHIFT + 1, (blocks, cols))
    sum_limit = 2 ** (len(dut.sums.payload.sums[0]) - 1)
    pixels = []
    for pixel in range(30):
        taps = rng.integers(-sum_limit, sum_limit, (int(rng.integers(1, 10)), cols))
        pixels.append((pixel, int(rng.integers(0, blocks)), taps))
    relu = True
    results = {}
    last_tap_cycle = {}

    async def bench(ctx):
        ctx.set(dut.relu, int(relu))
        queue = []
        for address, block, taps in pixels:
            for k, tap in enumerate(taps):
                queue.append((address, block, k == 0, k == len(taps) - 1, tap))
                if rng.random() < 0.3:
                    queue.append(None)  # a bubble
        requested = None
        for cycle in range(len(queue) + dut.latency + 2):
            item = queue[cycle] if cycle < len(queue) else None
            if item is None:
                ctx.set(dut.sums.valid, 0)
            else:
                address, block, first, last, tap = item
                payload = dut.sums.payload
                for c in range(cols):
                    ctx.set(payload.sums[c], int(tap[c]))
                ctx.set(payload.tag.first, first)
                ctx.set(payload.tag.last, last)
                ctx.set(payload.tag.out_addr, address)
                ctx.set(payload.tag.block, block)
                ctx.set(dut.sums.valid, 1)
                if last:
                    last_tap_cycle[address] = cycle
            # the parameter memory: read latency 1 (the address of the previous cycle)
            if requested is not None:
                for c in range(cols):
                    ctx.set(dut.params[c].bias, int(bias[requested, c]))
                    ctx.set(dut.params[c].multiplier, int(multiplier[requested, c]))
                    ctx.set(dut.params[c].shift, int(shift[requested, c]))
            if ctx.get(dut.results.valid):
                address = ctx.get(dut.results.payload.addr)
                data = [ctx.get(dut.results.payload.data[c]) for c in range(cols)]
                results[address] = (cycle, data)
            await ctx.tick()
            requested = ctx.get(dut.param_addr)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert sorted(results) == [address for address, _, _ in pixels]
    for address, block, taps in pixels:
        acc = bias[block] + taps.sum(axis=0)
        expected = golden.requantize(acc.reshape(cols, 1), multiplier[block], shift[block], relu)
        cycle, data = results[address]
        assert data == expected.reshape(-1).tolist(), address
        assert cycle == last_tap_cycle[address] + dut.latency

"""The engine's pool/add unit and its output-buffer writeback (hw.engine.pool) under Amaranth's
simulator, against fpga.spec.golden: every output word, its address and its cycle (the exported
latency, the cycle model's figure).

Random data, seeded (the seed is printed; POOL_SEED=... reproduces a run)."""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from fpga.spec import golden
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import (
    ADD_LATENCY,
    AVGPOOL_LATENCY,
    MAXPOOL_LATENCY,
    POOL_INPUT_LATENCY,
    WRITEBACK_LATENCY,
    Op,
    add_cycles_per_vector,
    add_latency,
)
from hw.engine.pool import PoolUnit, Writeback

#: small (quick to simulate, same structure) and the default 8 x 8
CONFIGS = [DEFAULT_CONFIG.replace(rows=4, cols=4), DEFAULT_CONFIG]
IDS = [f"{c.rows}x{c.cols}" for c in CONFIGS]


def seeded(offset: int) -> np.random.Generator:
    seed = int(os.environ.get("POOL_SEED", 2026)) + offset
    print(f"POOL_SEED={seed - offset} (rng seed {seed})")
    return np.random.default_rng(seed)


def simulate(dut: PoolUnit, runs, rng) -> tuple[list[list[int]], list]:
    """Drive ``runs`` through ``dut``: each run is (parameters, tokens) with ``None`` for an
    idle cycle; a ``start`` pulse and two idle cycles before each run, and enough idle cycles
    after it to drain. Idle cycles carry random payloads (valid low). Returns each run's
    token cycles and every write as (cycle, address, lanes)."""
    lanes = dut.lanes
    drain = max(dut.last_write.values()) + 2
    schedule = []  # (run, parameters, token or None, start)
    for run, (parameters, tokens) in enumerate(runs):
        schedule.append((run, parameters, None, 1))
        schedule += [(run, parameters, None, 0)] * 2
        schedule += [(run, parameters, token, 0) for token in tokens]
        schedule += [(run, parameters, None, 0)] * drain
    token_cycles = [[] for _ in runs]
    writes = []

    async def bench(ctx):
        payload = dut.tokens.payload
        for cycle, (run, parameters, token, start) in enumerate(schedule):
            for name, value in parameters.items():
                ctx.set(getattr(dut, name), value)
            ctx.set(dut.start, start)
            ctx.set(dut.tokens.valid, token is not None)
            if token is None:  # garbage: only valid cycles may count
                token = {
                    "act": rng.integers(-128, 128, lanes),
                    "b": rng.integers(-128, 128, lanes),
                    "first": int(rng.integers(0, 2)),
                    "last": int(rng.integers(0, 2)),
                    "out_addr": int(rng.integers(0, 2**dut.config.act_out_word_bits)),
                }
            else:
                token_cycles[run].append(cycle)
            for i in range(lanes):
                ctx.set(payload.act[i], int(token["act"][i]))
                ctx.set(payload.b[i], int(token["b"][i]))
            ctx.set(payload.tag.first, token["first"])
            ctx.set(payload.tag.last, token["last"])
            ctx.set(payload.tag.out_addr, token["out_addr"])
            if ctx.get(dut.writes.valid):
                out = dut.writes.payload
                data = [ctx.get(out.data[i]) for i in range(lanes)]
                writes.append((cycle, ctx.get(out.addr), data))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return token_cycles, writes


def bubbles(rng, p: float = 0.25) -> list:
    """Idle cycles between two tokens: none, or a few."""
    return [None] * int(rng.integers(1, 4)) if rng.random() < p else []


def parameters(op, relu=False, mult_a=0, mult_b=0, shift=0) -> dict:
    return {"op": op, "relu": int(relu), "mult_a": mult_a, "mult_b": mult_b, "shift": shift}


def check(writes, expected):
    assert len(writes) == len(expected), (len(writes), len(expected))
    for got, want in zip(writes, expected, strict=True):
        assert got == want, f"(cycle, address, lanes): got {got}, expected {want}"


def window_tap(x, g: int, lanes: int, iy: int, ix: int, end: int):
    """Group ``g``'s lanes of image ``x`` at ``(iy, ix)``; the smallest activation outside the
    image or right of the window (columns from ``end`` on)."""
    if iy < x.shape[1] and ix < min(x.shape[2], end):
        return x[g * lanes : (g + 1) * lanes, iy, ix]
    return np.full(lanes, golden.ACT_MIN)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_maxpool_equals_golden_maxpool(config):
    """Random int8 images (1-2 channel groups, 3..11 x 3..11) as the engine issues them (for
    each output pixel and channel group the 3x3/2 window's rows, each as two tokens of two
    taps, ``act`` column kx and ``b`` kx + 1 for kx 0 and 2; taps outside the image or the
    window read the smallest activation), with bubbles between tokens: each window's output
    word is ``golden.maxpool`` at its address, ``MAXPOOL_LATENCY`` cycles after its last
    token."""
    dut = PoolUnit(config)
    assert dut.latency[Op.MAXPOOL] == dut.max_latency == MAXPOOL_LATENCY
    lanes = config.rows
    rng = seeded(1)
    runs, expected_words = [], []
    for _ in range(4):
        groups = int(rng.integers(1, 3))
        h, w = (int(v) for v in rng.integers(3, 12, 2))
        x = rng.integers(-128, 128, (groups * lanes, h, w)).astype(np.int8)
        y = golden.maxpool(x)
        out_h, out_w = y.shape[1:]
        tokens, words = [], []

        for oy in range(out_h):
            for ox in range(out_w):
                for g in range(groups):
                    address = (oy * out_w + ox) * groups + g
                    for ky in range(3):
                        for kx in (0, 2):
                            iy, ix = 2 * oy + ky, 2 * ox + kx
                            tokens += bubbles(rng, 0.15)
                            tokens.append(
                                {
                                    "act": window_tap(x, g, lanes, iy, ix, 2 * ox + 3),
                                    "b": window_tap(x, g, lanes, iy, ix + 1, 2 * ox + 3),
                                    "first": int(ky == 0 and kx == 0),
                                    "last": int(ky == 2 and kx == 2),
                                    "out_addr": address,
                                }
                            )
                    words.append((address, y[g * lanes : (g + 1) * lanes, oy, ox].tolist()))
        runs.append((parameters(Op.MAXPOOL, relu=bool(rng.integers(0, 2))), tokens))
        expected_words.append(words)
    token_cycles, writes = simulate(dut, runs, rng)
    expected = []
    for (_, tokens), cycles, words in zip(runs, token_cycles, expected_words, strict=True):
        last_taps = [c for c, t in zip(cycles, (t for t in tokens if t), strict=True) if t["last"]]
        for cycle, (address, data) in zip(last_taps, words, strict=True):
            expected.append((cycle + MAXPOOL_LATENCY, address, data))
    assert len(expected) > 20
    check(writes, expected)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_add_equals_golden_add(config):
    """Runs of random ``mult_a``, ``mult_b`` (16 bits), ``shift`` (0..47) and ReLU, plus a
    run that clamps and one that rounds, each a stream of random int8 operand vectors (one
    every ``add_cycles_per_vector`` cycles or later) at random addresses: each output word is
    ``golden.add`` of its operands at its address, ``add_latency`` cycles after its token."""
    dut = PoolUnit(config)
    phases = add_cycles_per_vector(config)
    assert dut.add_phases == phases
    assert dut.latency[Op.ADD] == dut.add_latency == add_latency(config)
    assert dut.add_latency == POOL_INPUT_LATENCY + phases - 1 + ADD_LATENCY
    lanes = config.rows
    rng = seeded(2)
    settings = [
        (int(rng.integers(0, 2**16)), int(rng.integers(0, 2**16)), int(rng.integers(0, 48)), relu)
        for relu in (False, True, False, True)
    ]
    settings += [(65535, 65535, 0, False), (3, 5, 3, False), (1, 1, 1, True)]
    runs, expected_words = [], []
    for mult_a, mult_b, shift, relu in settings:
        tokens, words = [], []
        addresses = rng.permutation(2**config.act_out_word_bits)[:24]
        for address in addresses:
            a = rng.integers(-128, 128, lanes).astype(np.int8)
            b = rng.integers(-128, 128, lanes).astype(np.int8)
            token = {"act": a, "b": b, "first": 1, "last": 1, "out_addr": int(address)}
            tokens += [token] + [None] * (phases - 1) + bubbles(rng)
            data = golden.add(a, b, mult_a, mult_b, shift, relu)
            words.append((int(address), data.tolist()))
        runs.append((parameters(Op.ADD, relu, mult_a, mult_b, shift), tokens))
        expected_words.append(words)
    token_cycles, writes = simulate(dut, runs, rng)
    expected = []
    for cycles, words in zip(token_cycles, expected_words, strict=True):
        for cycle, (address, data) in zip(cycles, words, strict=True):
            expected.append((cycle + dut.add_latency, address, data))
    check(writes, expected)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_avgpool_equals_golden_global_avgpool(config):
    """Runs of random int8 images (1-3 channel groups, 1..4 x 1..4 pixels, bubbles between
    pixels, a group's words flushed before the next group's pixels as the engine stalls):
    group ``g``'s ``sum_words`` words are ``golden.global_avgpool``'s int32 sums (channel
    ``c`` little-endian at byte ``4c``) at words ``sum_words * g ...``, one per cycle from
    ``AVGPOOL_LATENCY`` cycles after the group's last pixel; each run counts groups from 0."""
    dut = PoolUnit(config)
    assert dut.latency[Op.AVGPOOL] == dut.avgpool_latency == AVGPOOL_LATENCY
    words_per_group = config.acc_bits // config.act_bits
    assert dut.sum_words == words_per_group
    assert dut.last_write[Op.AVGPOOL] == AVGPOOL_LATENCY + words_per_group - 1
    lanes = config.rows
    rng = seeded(3)
    runs, expected_words = [], []
    for _ in range(3):
        groups = int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(1, 5, 2))
        x = rng.integers(-128, 128, (groups * lanes, h, w)).astype(np.int8)
        sums = golden.global_avgpool(x)
        blob = np.frombuffer(sums.astype("<i4").tobytes(), dtype=np.int8).reshape(-1, lanes)
        tokens, words = [], []
        for g in range(groups):
            pixels = [(iy, ix) for iy in range(h) for ix in range(w)]
            for k, (iy, ix) in enumerate(pixels):
                tokens += bubbles(rng, 0.2)
                tokens.append(
                    {
                        "act": x[g * lanes : (g + 1) * lanes, iy, ix],
                        "b": rng.integers(-128, 128, lanes),
                        "first": int(k == 0),
                        "last": int(k == len(pixels) - 1),
                        "out_addr": int(rng.integers(0, 2**config.act_out_word_bits)),
                    }
                )
            tokens += [None] * int(rng.integers(words_per_group - 1, words_per_group + 2))
            group_words = range(g * words_per_group, (g + 1) * words_per_group)
            words.append([(word, blob[word].tolist()) for word in group_words])
        runs.append((parameters(Op.AVGPOOL, relu=bool(rng.integers(0, 2))), tokens))
        expected_words.append(words)
    token_cycles, writes = simulate(dut, runs, rng)
    expected = []
    for (_, tokens), cycles, words in zip(runs, token_cycles, expected_words, strict=True):
        last_pixels = [
            c for c, t in zip(cycles, (t for t in tokens if t), strict=True) if t["last"]
        ]
        for cycle, group in zip(last_pixels, words, strict=True):
            for k, (address, data) in enumerate(group):
                expected.append((cycle + AVGPOOL_LATENCY + k, address, data))
    check(writes, expected)


def test_writeback_is_one_writer_per_op():
    """Random CONV results and pool writes every cycle under a random op: the ACT_OUT write
    port carries the accumulator's stream under CONV and the pool unit's under the other ops
    (enable, address and word), ``latency`` cycles later
    (``fpga.spec.layout.WRITEBACK_LATENCY``)."""
    config = CONFIGS[0]
    dut = Writeback(config)
    assert dut.latency == WRITEBACK_LATENCY >= 1
    lanes = config.cols
    rng = seeded(4)
    seen = {op: 0 for op in Op}

    async def bench(ctx):
        chosen = []  # what each cycle's op selects, in order
        for cycle in range(200 + dut.latency):
            op = Op(int(rng.integers(0, len(Op))))
            ctx.set(dut.op, op)
            streams = {}
            for name, port in (("conv", dut.conv), ("pool", dut.pool)):
                valid = int(rng.integers(0, 2))
                addr = int(rng.integers(0, 2**config.act_out_word_bits))
                data = rng.integers(-128, 128, lanes).tolist()
                ctx.set(port.valid, valid)
                ctx.set(port.payload.addr, addr)
                for i in range(lanes):
                    ctx.set(port.payload.data[i], data[i])
                word = sum((value & 0xFF) << (8 * i) for i, value in enumerate(data))
                streams[name] = (valid, addr, word)
            chosen.append((op, streams["conv" if op == Op.CONV else "pool"]))
            await ctx.tick()
            if cycle + 1 >= dut.latency:
                got = (ctx.get(dut.write.en), ctx.get(dut.write.addr), ctx.get(dut.write.data))
                op, want = chosen[cycle + 1 - dut.latency]
                assert got == want, (cycle, op, got, want)
                seen[op] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert all(seen.values())

"""Small gateware blocks under Amaranth's own simulator, against fpga.spec.golden (and the UART
against exact bit timing)."""

import math
from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator

from fpga.spec import golden
from hw.engine.requant import Requantizer


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
    # around the clamp bounds and the rounding, with and without ReLU (shift 0, 1 and 2)
    cases += [
        (acc, 1, shift, relu)
        for shift in (0, 1, 2)
        for acc in range(-520 << shift >> 1, 520 << shift >> 1, 1 + shift)
        for relu in (False, True)
    ]
    got, first_valid = [], []

    async def bench(ctx):
        ticks = 0
        for acc, mult, shift, relu in cases:
            ctx.set(dut.acc, acc)
            ctx.set(dut.multiplier, mult)
            ctx.set(dut.shift, shift)
            ctx.set(dut.relu, relu)
            ctx.set(dut.valid, 1)
            await ctx.tick()
            ticks += 1
            if ctx.get(dut.result_valid):
                got.append(ctx.get(dut.result))
                first_valid.append(ticks)
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency):
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
    assert first_valid[0] == dut.latency  # the exported latency is the real one


# -- UART PHY (hw.soc.uart): the fractional bit timer ----------------------------------------------
UART_RATES = [(100_000_000, 12_000_000), (25_000_000, 3_000_000), (12_000_000, 3_000_000)]


def _uart_frames(data: bytes) -> list[int]:
    """8N1 line levels, one per bit: start 0, data LSB first, stop 1."""
    return [level for byte in data for level in [0, *((byte >> i) & 1 for i in range(8)), 1]]


@pytest.mark.parametrize("clock_hz,baud", UART_RATES)
def test_uart_tx_keeps_the_exact_bit_rate(clock_hz, baud):
    """Back-to-back bytes: every bit edge is within one cycle of k * clock/baud after the first
    start bit (no drift over 400 bits), and the line read at ideal mid-bit times is the data."""
    from hw.soc.uart import UART

    dut = UART(clock_hz, baud)
    period = Fraction(clock_hz, baud)
    payload = bytes(np.random.default_rng(5).integers(0, 256, 40, dtype=np.uint8))
    line = []

    async def bench(ctx):
        sent = 0
        for _ in range(int(period * 10 * (len(payload) + 1))):
            if sent < len(payload):
                ctx.set(dut.tx.payload, payload[sent])
                ctx.set(dut.tx.valid, 1)
            else:
                ctx.set(dut.tx.valid, 0)
            ready = ctx.get(dut.tx.ready)
            await ctx.tick()
            if ready and sent < len(payload):
                sent += 1
            line.append(ctx.get(dut.tx_pin))

    sim = Simulator(dut)
    sim.add_clock(1 / clock_hz)
    sim.add_testbench(bench)
    sim.run()
    start = line.index(0)
    bits = _uart_frames(payload)
    edges = [t - start for t in range(start, len(line)) if line[t] != line[t - 1]]
    for edge in edges:
        k = round(edge / period)
        assert abs(edge - k * period) < 1, f"bit edge at cycle {edge}, ideal {float(k * period)}"
    sampled = [line[start + math.floor((k + Fraction(1, 2)) * period)] for k in range(len(bits))]
    assert sampled == bits


@pytest.mark.parametrize("clock_hz,baud", UART_RATES)
@pytest.mark.parametrize("error", [0.0, 0.02, -0.02])
def test_uart_rx_samples_mid_bit(clock_hz, baud, error):
    """Bytes at the nominal rate and 2 % off it, back to back or with idle gaps, all arrive."""
    rng = np.random.default_rng(6)
    data = bytes(rng.integers(0, 256, 30, dtype=np.uint8))
    gaps = [int(g) for g in rng.integers(0, 3, len(data))]
    got, framing = _receive_at(clock_hz, baud, baud * (1 + error), data, gaps)
    assert (got, framing) == (data, 0)


def _receive_at(clock_hz, dut_baud, line_baud, data, gaps, stop_level=1):
    """Drive the rx pin of ``UART(clock_hz, dut_baud)`` with ``data`` sent at ``line_baud``
    (``gaps``: idle bits before each byte); returns (bytes received, framing errors)."""
    from hw.soc.uart import UART

    dut = UART(clock_hz, dut_baud)
    period = clock_hz / line_baud
    levels, t = [], 0.0
    for byte, gap in zip(data, gaps, strict=True):
        frame = [0, *((byte >> i) & 1 for i in range(8)), stop_level]
        for level in [1] * gap + frame:
            t += period
            levels += [level] * (round(t) - len(levels))
    levels += [1] * int(4 * period)
    got = []

    async def bench(ctx):
        for level in levels:
            ctx.set(dut.rx_pin, level)
            await ctx.tick()
            if ctx.get(dut.rx.valid):
                got.append(ctx.get(dut.rx.payload))
        got.append(ctx.get(dut.framing_errors))

    sim = Simulator(dut)
    sim.add_clock(1 / clock_hz)
    sim.add_testbench(bench)
    sim.run()
    return bytes(got[:-1]), got[-1]


def test_uart_rx_counts_a_low_stop_bit():
    got, framing = _receive_at(100_000_000, 12_000_000, 12_000_000, b"\x55\xaa", [1, 1], 0)
    assert (got, framing) == (b"", 2)


@pytest.mark.parametrize("clock_hz,baud", [(10_000_000, 3_000_000), (100_000_000, 0)])
def test_uart_refuses_a_clock_too_slow_for_the_baud(clock_hz, baud):
    from hw.soc.uart import bit_period

    with pytest.raises(ValueError, match="baud"):
        bit_period(clock_hz, baud)
    assert bit_period(100_000_000, 12_000_000) == (25, 3)  # 8 1/3 cycles a bit

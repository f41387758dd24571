"""hw.soc.dram + hw.soc.dma: against the real LiteDRAM controller (``litedram_gen --sim`` Arty A7
DDR3 core under Verilator) and, fast, the DMA alone against a Python native-port model (Amaranth
simulator, random latency and backpressure).

The Verilator tests print their seed (``DRAM_SEED`` reproduces a run) and the measured DMA
throughput (``pytest -s``); generation + build are cached (``fpga.build.litedram``, ``sim.runner``).
"""

import importlib.util
import os
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.soc.dma import DMA, request_layout, words_layout
from sim import runner

WORD_BYTES = 16
needs_dram_sim = pytest.mark.skipif(
    importlib.util.find_spec("litedram") is None or not runner.simulator_available("verilator"),
    reason="needs litedram (dev extra) and Verilator",
)


@pytest.fixture(scope="module")
def dram_build():
    from sim import dram_bench

    build = dram_bench.build()
    print(f"\nLiteDRAM sim core + Verilator build: {build[3]:.1f} s (0 = cached)")
    return build


def _seed(name: str) -> int:
    seed = int(os.environ.get("DRAM_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"\n{name}: DRAM_SEED={seed}")
    return seed


def _check(ok: bool, testcase: str, result: dict, seed: int, tmp_path):
    """On a failure: rerun the seed traced, keep the VCD, say how to reproduce."""
    if ok:
        return
    from sim import dram_bench

    waves = dram_bench.keep_waveform(testcase, tmp_path / "traced.json", seed)
    raise AssertionError(
        f"{testcase} failed: {result}\nwaveform: {waves}\n"
        f"rerun: DRAM_SEED={seed} .venv/bin/python -m pytest -s tests/hw/test_dram.py"
    )


@needs_dram_sim
def test_native_port_random_writes_reads_backpressure(dram_build, tmp_path):
    from sim import dram_bench

    seed = _seed("native port")
    result = dram_bench.run(dram_build, "native_port_random", tmp_path / "native.json", seed)
    print(result)
    ok = result["mismatches"] == 0 and result["reads"] == result["reads_returned"] > 100
    _check(ok and result["protocol_error"] == 0, "native_port_random", result, seed, tmp_path)


@needs_dram_sim
def test_dma_random_transfers_and_throughput(dram_build, tmp_path):
    from sim import dram_bench

    seed = _seed("dma")
    result = dram_bench.run(dram_build, "dma_random", tmp_path / "dma.json", seed)
    print(result)
    print(
        f"DMA throughput (4 KiB, no backpressure): read {result['read_words_per_cycle']} "
        f"words/cycle ({result['read_words']} words in {result['read_cycles']} cycles), "
        f"write {result['write_words_per_cycle']} words/cycle "
        f"({result['write_words']} words in {result['write_cycles']} cycles); "
        f"read latency {result['read_latency_cycles']} cycles to the first word "
        f"(range over all reads {result['read_latency_range']})"
    )
    ok = result["mismatches"] == 0 and result["keep_errors"] == 0
    ok &= result["whole_region_equal"] and result["protocol_error"] == 0
    _check(ok, "dma_random", result, seed, tmp_path)
    # not a timed test: a floor that catches one-word-at-a-time regressions (~0.05 words/cycle)
    assert result["read_words_per_cycle"] > 0.3 and result["write_words_per_cycle"] > 0.3


# ---------------------------------------------------------------- DMA alone, Amaranth simulator


class NativePortModel:
    """The wrapper's side of hw.soc.dram.NativePortSignature as a Python model: commands accepted
    with random stalls, read data after a random latency (in order), write data buffered and
    paired with write commands in order (what hw.soc.dram.LiteDRAMNative guarantees)."""

    def __init__(self, rng, memory: bytearray, latency=(3, 12)):
        self.rng, self.memory, self.latency = rng, memory, latency
        self.pending_writes = []  # word addresses awaiting their data
        self.write_data = []  # (data, we) awaiting their command
        self.reads = []  # (due cycle, word)

    def word(self, address):
        return self.memory[address * WORD_BYTES : (address + 1) * WORD_BYTES]

    async def run(self, ctx, port):
        cycle, read_out = 0, None
        while True:
            cmd_ready = self.rng.random() < 0.7
            wdata_ready = self.rng.random() < 0.8
            ctx.set(port.cmd.ready, cmd_ready)
            ctx.set(port.wdata.ready, wdata_ready)
            if read_out is None and self.reads and self.reads[0][0] <= cycle:
                read_out = self.reads.pop(0)[1]
            ctx.set(port.rdata.valid, read_out is not None)
            if read_out is not None:
                ctx.set(port.rdata.payload, {"data": int.from_bytes(read_out, "little")})
            *_, cmd_valid, cmd, wdata_valid, wdata, rdata_ready = await ctx.tick().sample(
                port.cmd.valid, port.cmd.payload, port.wdata.valid, port.wdata.payload,
                port.rdata.ready)  # fmt: skip
            if cmd_valid and cmd_ready:
                if cmd.we:
                    self.pending_writes.append(int(cmd.addr))
                else:  # in order: never due before the previous read
                    due = cycle + self.rng.randint(*self.latency)
                    due = max([due] + [d for d, _ in self.reads[-1:]])
                    self.reads.append((due, bytes(self.word(int(cmd.addr)))))
            if wdata_valid and wdata_ready:  # buffered like the wrapper does, paired in order
                self.write_data.append((int(wdata.data), int(wdata.we)))
            while self.pending_writes and self.write_data:
                address = self.pending_writes.pop(0)
                value, mask = self.write_data.pop(0)
                data = value.to_bytes(WORD_BYTES, "little")
                for b in range(WORD_BYTES):
                    if mask >> b & 1:
                        self.memory[address * WORD_BYTES + b] = data[b]
            if read_out is not None and rdata_ready:
                read_out = None
            cycle += 1


def test_dma_against_a_native_port_model():
    """Reader/writer logic, fast: random ranges, random keep, random backpressure, a model
    native port with random command stalls and read latency."""
    seed = 1234
    rng = random.Random(seed)
    size = 4096
    memory = bytearray(rng.randbytes(size))
    expected = bytearray(memory)
    dma = DMA(128, 8, in_flight=4)
    port_model = NativePortModel(rng, memory)
    request_fields = request_layout(12)
    assert words_layout(128).size == 128 + 16 + 1 and request_fields.size == 12 + 13
    results = {"checked": 0}

    async def testbench(ctx):
        for _ in range(30):
            length = rng.randrange(1, 300)
            addr = rng.randrange(0, size - length)
            first, last = addr // WORD_BYTES, (addr + length - 1) // WORD_BYTES
            if rng.random() < 0.5:  # write
                ctx.set(dma.write_request.payload, {"addr": addr, "length": length})
                ctx.set(dma.write_request.valid, 1)
                await ctx.tick().until(dma.write_request.ready)
                ctx.set(dma.write_request.valid, 0)
                for word in range(first, last + 1):
                    lane = rng.randbytes(WORD_BYTES)
                    keep = rng.getrandbits(WORD_BYTES)
                    for b in range(WORD_BYTES):
                        a = word * WORD_BYTES + b
                        if addr <= a < addr + length and keep >> b & 1:
                            expected[a] = lane[b]
                    word_value = int.from_bytes(lane, "little")
                    payload = {"data": word_value, "keep": keep, "last": word == last}
                    ctx.set(dma.write_data.payload, payload)
                    ctx.set(dma.write_data.valid, 1)
                    await ctx.tick().until(dma.write_data.ready)
                    ctx.set(dma.write_data.valid, 0)
                    if rng.random() < 0.3:
                        await ctx.tick()
                await ctx.tick().until(~dma.write_busy)
                for _ in range(40):  # the model takes the buffered data
                    await ctx.tick()
            else:  # read
                ctx.set(dma.read_request.payload, {"addr": addr, "length": length})
                ctx.set(dma.read_request.valid, 1)
                await ctx.tick().until(dma.read_request.ready)
                ctx.set(dma.read_request.valid, 0)
                got = bytearray()
                for word in range(first, last + 1):
                    while rng.random() < 0.3:
                        await ctx.tick()
                    ctx.set(dma.read_data.ready, 1)
                    (payload,) = (
                        await ctx.tick().sample(dma.read_data.payload).until(dma.read_data.valid)
                    )
                    ctx.set(dma.read_data.ready, 0)
                    lane = int(payload.data).to_bytes(WORD_BYTES, "little")
                    want = sum(
                        1 << b
                        for b in range(WORD_BYTES)
                        if addr <= word * WORD_BYTES + b < addr + length
                    )
                    assert int(payload.keep) == want and int(payload.last) == (word == last)
                    got += bytes(lane[b] for b in range(WORD_BYTES) if want >> b & 1)
                assert bytes(got) == bytes(expected[addr : addr + length]), (addr, length)
                results["checked"] += 1
        assert memory == expected

    sim = Simulator(dma)
    sim.add_clock(1e-8)

    async def native_port(ctx):
        await port_model.run(ctx, dma.dram)

    sim.add_testbench(native_port, background=True)
    sim.add_testbench(testbench)
    sim.run()
    assert results["checked"] > 5


@pytest.mark.parametrize("name,latency,stall", [("random", (3, 25), 0.3), ("fixed", (20, 20), 0.0)])
def test_dma_reader_takes_requests_back_to_back(name, latency, stall):
    """Pipelined reads: a producer offers 60 short random reads back to back (the reader takes
    the next while the previous one's words still come back), a consumer takes the words with
    random backpressure: every word's data, ``keep`` and ``last`` are its own request's; with a
    fixed latency the reads share it (far fewer cycles than one latency each)."""
    rng = random.Random(99)
    size = 4096
    memory = bytearray(rng.randbytes(size))
    dma = DMA(128, 8, in_flight=32 if stall == 0 else 6, queue_depth=4)
    port_model = NativePortModel(rng, memory, latency=latency)
    if stall == 0:
        port_model.rng = _AlwaysReady(rng)
    reads = []
    for _ in range(60):
        length = rng.choice([1, 3, 16, 17, rng.randrange(1, 60)])
        reads.append((rng.randrange(0, size - length), length))
    reads.insert(5, (100, 0))  # moves nothing
    got, cycles = [], {}

    async def producer(ctx):
        for addr, length in reads:
            ctx.set(dma.read_request.payload, {"addr": addr, "length": length})
            ctx.set(dma.read_request.valid, 1)
            await ctx.tick().until(dma.read_request.ready)
        ctx.set(dma.read_request.valid, 0)

    async def consumer(ctx):
        words = sum((a + n - 1) // WORD_BYTES - a // WORD_BYTES + 1 for a, n in reads if n)
        cycle = 0
        while len(got) < words:
            ready = stall == 0 or rng.random() >= stall
            ctx.set(dma.read_data.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dma.read_data.valid, dma.read_data.payload)
            cycle += 1
            if valid and ready:
                got.append((int(payload.data), int(payload.keep), int(payload.last)))
        cycles["words"] = cycle
        ctx.set(dma.read_data.ready, 0)
        await ctx.tick()
        assert not ctx.get(dma.read_busy)

    async def native_port(ctx):
        await port_model.run(ctx, dma.dram)

    sim = Simulator(dma)
    sim.add_clock(1e-8)
    sim.add_testbench(native_port, background=True)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    expected = []
    for addr, length in reads:
        if not length:
            continue
        first, last = addr // WORD_BYTES, (addr + length - 1) // WORD_BYTES
        for word in range(first, last + 1):
            keep = sum(
                1 << b for b in range(WORD_BYTES) if addr <= word * WORD_BYTES + b < addr + length
            )
            value = int.from_bytes(memory[word * WORD_BYTES : (word + 1) * WORD_BYTES], "little")
            expected.append((value, keep, int(word == last)))
    assert got == expected, name
    if name == "fixed":
        print(f"\n{len(reads)} back-to-back reads, {len(got)} words: {cycles['words']} cycles")
        assert cycles["words"] < len(reads) * 10


class _AlwaysReady:
    """NativePortModel's randomness with the command side always ready (latency still drawn)."""

    def __init__(self, rng):
        self.rng = rng

    def random(self):
        return 0.0

    def randint(self, a, b):
        return self.rng.randint(a, b)


def test_board_variant_wraps_pads_and_defines_the_user_clock_domain():
    """Board mode (not simulated here): the PLL input, the pads passed by name with the
    direction the core declares, unused CSR inputs tied off, user_clk/user_rst out for the
    parent's domain."""
    from amaranth import ClockDomain, ClockSignal, IOPort, Module, ResetSignal
    from amaranth.back import rtlil

    from hw.soc.dram import LiteDRAMNative

    core_ports = {
        "clk": ("input", 1), "rst": ("input", 1), "sdram_dq": ("inout", 16),
        "sdram_a": ("output", 13), "wb_ctrl_adr": ("input", 30), "user_clk": ("output", 1),
    }  # fmt: skip
    pads = {"sdram_dq": IOPort(16, name="dq_pad"), "sdram_a": IOPort(13, name="a_pad")}
    wrapper = LiteDRAMNative(16, 24, sim=False, core_ports=core_ports, pads=pads, domain="dram")
    m = Module()
    m.submodules.dram = wrapper
    m.domains.dram = ClockDomain("dram")
    m.d.comb += [
        ClockSignal("dram").eq(wrapper.user_clk),
        ResetSignal("dram").eq(wrapper.user_rst),
    ]
    text = rtlil.convert(m, ports=[wrapper.clk_in, wrapper.rst_in])
    assert "connect \\sdram_dq" in text and "connect \\wb_ctrl_adr 30'" in text
    assert "connect \\user_clk" in text

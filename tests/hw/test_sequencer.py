"""hw.soc.sequencer in Amaranth's simulator: the sequencer + hw.soc.dma.DMA against a Python model
of the native port (tests/hw/test_dram.py's, random stalls and read latency) and a Python engine
model (records buffer writes, answers reads one cycle later, a RUN is done after a latency).

Checked against fpga.compiler.reference.run_commands (the reference executor): the same buffer
writes byte for byte and in order, the same DRAM afterwards; refusals end in ``done`` with an error
code, never a hang. ``pytest -s`` prints the sequential version's overhead for one real tile.
"""

import copy
import os
import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import data
from amaranth.sim import Simulator

from fpga.compiler.cost import SEQUENCER_COSTS, load_commands, row_chunks
from fpga.compiler.reference import run_commands
from fpga.compiler.traffic import transfer_totals
from fpga.spec.commands import (
    COMMAND_BYTES,
    HALF_SPACES,
    Flag,
    Opcode,
    buffer_sizes,
    command,
    pack_commands,
    run_address,
    run_claims,
    touches,
)
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import BufferSpace, transfer_bytes
from hw.soc.dma import DMA
from hw.soc.dram import READ_BUFFER_DEPTH
from hw.soc.sequencer import Sequencer, SequencerError, command_layout, connect_dma
from tests.hw.test_dram import NativePortModel

WORD_BYTES = 16


class ByteEngine:
    """A buffer model with a made-up RUN (ACT_OUT = ACT_IN + WEIGHT + run number)."""

    config = DEFAULT_CONFIG

    def __init__(self, latency=30):
        self.buffers = {s: bytearray(n) for s, n in buffer_sizes(DEFAULT_CONFIG).items()}
        self.runs, self.latency = 0, latency

    def write(self, space, offset, data):
        self.buffers[BufferSpace(space)][offset : offset + len(data)] = data

    def read(self, space, offset, length):
        return bytes(self.buffers[BufferSpace(space)][offset : offset + length])

    def run(self, expected_cycles=0, flags=0):
        """A SPLIT run reads and writes its halves (run_address), as the engine does."""
        a, w = self.buffers[BufferSpace.ACT_IN], self.buffers[BufferSpace.WEIGHT]
        out = self.buffers[BufferSpace.ACT_OUT]
        at = {s: (lambda i, s=s: run_address(s, i, flags, DEFAULT_CONFIG)) for s in BufferSpace}
        for i in range(512):
            a_i, w_i = a[at[BufferSpace.ACT_IN](i)], w[at[BufferSpace.WEIGHT](i)]
            out[at[BufferSpace.ACT_OUT](i)] = (a_i + w_i + self.runs) & 255
        self.runs += 1
        return self.latency


class ByteLog:
    """Wraps an engine model; logs every buffer write as single bytes (what the port carries)."""

    def __init__(self, engine):
        self.engine, self.writes = engine, []

    def write(self, space, offset, data):
        self.writes += [(int(space), offset + i, b) for i, b in enumerate(data)]
        self.engine.write(space, offset, data)

    def read(self, space, offset, length):
        return self.engine.read(space, offset, length)

    @property
    def config(self):
        return self.engine.config

    def run(self, expected_cycles=0, flags=0):
        return self.engine.run(expected_cycles, flags=flags)


class FixedRng:
    """NativePortModel's randomness pinned: always ready, a fixed read latency."""

    def __init__(self, latency):
        self.value = latency

    def random(self):
        return 0.0

    def randint(self, a, b):
        return self.value


def run_sequencer(
    dram, pc, engine, rng, dram_size=None, write_stall=0.0, limit=200_000, bases=(0, 0)
):
    """The sequencer + DMA from ``pc`` until ``done`` (``bases``: the run's input and output
    slots); returns (result dict, byte write log)."""
    address_width = (len(dram) // WORD_BYTES - 1).bit_length()
    seq = Sequencer(DEFAULT_CONFIG, 8 * WORD_BYTES, address_width, dram_size or len(dram))
    # a fixed latency measures costs with the SoC's read depth; random runs stress a shallow one
    in_flight = READ_BUFFER_DEPTH if isinstance(rng, FixedRng) else 8
    dma = DMA(8 * WORD_BYTES, address_width, in_flight=in_flight)
    m = Module()
    m.submodules.seq, m.submodules.dma = seq, dma
    connect_dma(m, seq, dma)
    port_model = NativePortModel(
        rng, dram, latency=(20, 20) if isinstance(rng, FixedRng) else (3, 25)
    )
    log, result = ByteLog(engine), {}
    width = seq.transfer_bytes

    async def native_port(ctx):
        await port_model.run(ctx, dma.dram)

    async def engine_model(ctx):
        pending, countdown, claims, hazard = None, None, None, False
        while True:
            ready = write_stall == 0 or rng.random() >= write_stall
            response = seq.read.response
            ctx.set(seq.write.ready, ready)
            ctx.set(response.valid, pending is not None)
            ctx.set(response.payload.data, pending[0] if pending else 0)
            ctx.set(response.payload.block, int.from_bytes(pending[1], "little") if pending else 0)
            ctx.set(seq.engine_done, countdown == 0)
            error = getattr(engine, "error", False) and countdown is not None
            ctx.set(seq.engine_error, error or hazard)
            *_, we, space, addr, data, count, re, rspace, raddr, start, flags = (
                await ctx.tick().sample(
                    seq.write.valid, *(seq.write.payload[f] for f in ("space", "addr", "data")),
                    seq.write.payload.count,
                    seq.read.request.valid, seq.read.request.payload.space,
                    seq.read.request.payload.addr, seq.engine_start, seq.engine_flags,
                )
            )  # fmt: skip
            # what the run under way owns: a write or read touching it is the engine's error
            owned = claims if countdown is not None else None
            if we and ready:
                assert 1 <= count <= width and addr // width == (addr + count - 1) // width
                if touches(owned, space, addr, count):
                    hazard = True
                else:
                    log.write(space, addr, data.to_bytes(width, "little")[:count])
            pending = None
            if re:  # the byte, and its aligned block (as hw.engine.engine answers)
                hazard |= touches(owned, rspace, raddr, 1)
                block = log.read(rspace, raddr - raddr % width, width)
                pending = (log.read(rspace, raddr, 1)[0], block)
            if countdown is not None:
                countdown = None if countdown == 0 else countdown - 1
            if start:
                assert countdown is None, "a start while the engine runs"
                cycles = log.run(flags=flags)
                countdown = cycles
                claims = run_claims(flags, DEFAULT_CONFIG)
                result["engine_latency"] = result.get("engine_latency", 0) + cycles

    async def driver(ctx):
        ctx.set(seq.program_addr, pc)
        ctx.set(seq.input_base, bases[0])
        ctx.set(seq.output_base, bases[1])
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        for _ in range(limit):
            if ctx.get(seq.done):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"no done after {limit} cycles (a hang)")
        result.update(
            error=ctx.get(seq.error),
            code=SequencerError(ctx.get(seq.error_code)),
            pc=ctx.get(seq.pc),
            cycles=ctx.get(seq.cycles),
            engine_cycles=ctx.get(seq.engine_cycles),
        )
        await ctx.tick()
        assert not ctx.get(seq.busy) and not ctx.get(seq.done)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(native_port, background=True)
    sim.add_testbench(engine_model, background=True)
    sim.add_testbench(driver)
    sim.run()
    return result, log.writes


def _seed():
    seed = int(os.environ.get("SEQ_SEED", random.randrange(2**32)))
    print(f"\nSEQ_SEED={seed}")
    return seed


def test_command_layout_matches_the_record():
    assert command_layout().size == 8 * COMMAND_BYTES
    blob = pack_commands([command(Opcode.STORE, 2, length=7, dram_addr=99, count=3)])
    view = data.Const(command_layout(), int.from_bytes(blob, "little"))
    assert view.opcode == Opcode.STORE and view.space == 2
    assert view.length == 7 and view.dram_addr == 99 and view.count == 3


def test_small_program_equals_the_reference_executor():
    """Unaligned and strided LOADs, a gather of 7-byte runs 2 apart (as rows and as a WINDOWS
    LOAD), RUN, unaligned and strided STOREs, a zero-length LOAD: the buffer writes and the DRAM
    equal run_commands'."""
    rng = random.Random(_seed())
    dram = bytearray(rng.randbytes(8192))
    program = [
        command(Opcode.LOAD, BufferSpace.ACT_IN, length=37, dram_addr=1003, buffer_offset=5),
        command(Opcode.LOAD, BufferSpace.ACT_IN, length=7, count=5, dram_addr=2001,
                dram_stride=2, buffer_offset=100, buffer_stride=24),
        command(Opcode.LOAD, BufferSpace.ACT_IN, flags=Flag.WINDOWS, length=7, count=9,
                dram_addr=2503, dram_stride=2, buffer_offset=300, buffer_stride=24),
        command(Opcode.LOAD, BufferSpace.WEIGHT, length=100, dram_addr=3000),
        command(Opcode.LOAD, BufferSpace.DESCRIPTOR, length=32, dram_addr=3333),
        command(Opcode.LOAD, BufferSpace.WEIGHT, length=0, dram_addr=1 << 30),
        command(Opcode.RUN),
        command(Opcode.STORE, BufferSpace.ACT_OUT, length=45, dram_addr=5003, buffer_offset=3),
        command(Opcode.STORE, BufferSpace.ACT_OUT, length=8, count=3, dram_addr=6001,
                dram_stride=32, buffer_offset=64, buffer_stride=8),
        command(Opcode.RUN),
        command(Opcode.STORE, BufferSpace.ACT_OUT, length=16, dram_addr=7008),
        command(Opcode.END),
    ]  # fmt: skip
    pc = 4096
    dram[pc : pc + len(program) * COMMAND_BYTES] = pack_commands(program)
    expected_dram, reference = bytearray(dram), ByteLog(ByteEngine())
    stats = run_commands(expected_dram, reference, pc)
    result, writes = run_sequencer(dram, pc, ByteEngine(), rng, write_stall=0.2)
    assert not result["error"], result
    assert writes == reference.writes
    assert dram == expected_dram
    assert result["pc"] == pc + (len(program) - 1) * COMMAND_BYTES
    assert result["engine_latency"] == 60 and result["engine_cycles"] >= 60
    assert stats.commands == len(program)


@pytest.mark.parametrize(
    "records,pc,code,dram_size",
    [
        ([bytes(COMMAND_BYTES)], 0, SequencerError.OPCODE, None),  # zeroed DRAM
        ([command(9)], 0, SequencerError.OPCODE, None),
        ([command(Opcode.LOAD, 1, length=16, dram_addr=8190)], 0, SequencerError.DRAM_RANGE, None),
        ([command(Opcode.LOAD, 1, length=16, dram_addr=4000)], 0, SequencerError.DRAM_RANGE, 4000),
        ([command(Opcode.STORE, 2, length=8, count=3, dram_addr=8100, dram_stride=50)], 0,
         SequencerError.DRAM_RANGE, None),
        ([command(Opcode.LOAD, 0, length=33, dram_addr=16)], 0, SequencerError.BUFFER_RANGE, None),
        ([command(Opcode.LOAD, 8, length=1, dram_addr=16)], 0, SequencerError.SPACE, None),
        ([command(Opcode.END)], 8, SequencerError.ALIGNMENT, None),
        ([command(Opcode.END)], 8192 - 16, SequencerError.DRAM_RANGE, None),  # fetch off the end
        ([command(Opcode.RUN), command(Opcode.END)], 0, SequencerError.ENGINE, None),
        ([command(Opcode.LOAD, 1, flags=8, length=1)], 0, SequencerError.FLAGS, None),
        ([command(Opcode.LOAD, 1, flags=Flag.INPUT | Flag.OUTPUT, length=1)], 0,
         SequencerError.FLAGS, None),
        ([command(Opcode.STORE, 2, flags=Flag.WINDOWS, length=1)], 0, SequencerError.FLAGS, None),
        ([command(Opcode.STORE, 2, flags=Flag.INPUT, length=1)], 0, SequencerError.FLAGS, None),
        ([command(Opcode.RUN, flags=Flag.INPUT), command(Opcode.END)], 0, SequencerError.FLAGS,
         None),
        ([command(Opcode.END, flags=Flag.WINDOWS)], 0, SequencerError.FLAGS, None),
        ([command(Opcode.LOAD, 1, flags=Flag.WINDOWS, length=7, count=600, dram_stride=2)], 0,
         SequencerError.FLAGS, None),
        ([command(Opcode.LOAD, 1, flags=Flag.WINDOWS, length=7, count=5, dram_stride=2,
                  dram_addr=8185)], 0, SequencerError.DRAM_RANGE, None),
        ([command(Opcode.LOAD, 1, flags=Flag.WINDOWS, length=7, count=5, dram_stride=2,
                  buffer_offset=32760, buffer_stride=1)], 0, SequencerError.BUFFER_RANGE, None),
    ],
    ids=["zero", "opcode-9", "dram", "dram-size", "stride-past-end", "buffer", "space",
         "alignment", "fetch", "engine", "flags", "input-and-output", "windows-store",
         "input-store", "run-flag", "end-flag",
         "window-span", "window-dram", "window-buffer"],
)  # fmt: skip
def test_refusals_end_in_an_error_code_not_a_hang(records, pc, code, dram_size):
    rng = random.Random(7)
    dram = bytearray(8192)
    blob = b"".join(r if isinstance(r, bytes) else pack_commands([r]) for r in records)
    dram[max(pc, 0) : max(pc, 0) + len(blob)] = blob[: 8192 - pc]
    engine = ByteEngine()
    engine.error = code == SequencerError.ENGINE
    result, _ = run_sequencer(dram, pc, engine, rng, dram_size=dram_size, limit=5000)
    assert result["error"] and result["code"] == code, result


@pytest.mark.parametrize("name", ["fire2.squeeze", "fire2.concat"])
def test_one_real_tile_and_the_sequential_overhead(name):
    """A fire module's squeeze tile, and its expand1x1 + expand3x3 tile, of v1.1 at 64 from the
    resident image, the engine emulator computing: the sequencer moves the bytes the reference
    executor moves; prints the sequencer's cycles vs the engine's."""
    from fpga.compiler.emulator import EngineEmulator
    from fpga.compiler.program import compile_network
    from fpga.compiler.resident import compile_resident
    from fpga.spec.image import bundled_photos, preprocess
    from fpga.toolflow import quant

    network = quant.quantize_network("v1.1", size=64)
    program = compile_network(network, DEFAULT_CONFIG)
    resident = compile_resident(program, input_size=64)
    first, end = resident.unit_commands[name]
    assert len(next(u for u in program.units if u.name == name).tiles) == 1
    dram = resident.initial_dram(1 << 21)
    image = network.quantize_input(preprocess(bundled_photos()[0], 64))
    resident.write_input(dram, image)
    base = resident.program_address
    end_record = pack_commands([command(Opcode.END)])

    def with_end_at(index, blob):
        out = bytearray(blob)
        out[base + index * COMMAND_BYTES : base + (index + 1) * COMMAND_BYTES] = end_record
        return out

    # the reference up to the tile (the engine keeps the constants it already holds)
    engine = EngineEmulator(DEFAULT_CONFIG)
    prefix = with_end_at(first, dram)
    slots = {"input_base": resident.input_address(0), "output_base": resident.output_address(0)}
    run_commands(prefix, engine, base, **slots)
    before = with_end_at(end, prefix)
    before[base + first * COMMAND_BYTES : base + (first + 1) * COMMAND_BYTES] = dram[
        base + first * COMMAND_BYTES : base + (first + 1) * COMMAND_BYTES
    ]
    expected, reference = bytearray(before), ByteLog(copy.deepcopy(engine))
    stats = run_commands(expected, reference, base + first * COMMAND_BYTES)

    got = bytearray(before)
    result, writes = run_sequencer(got, base + first * COMMAND_BYTES, engine, FixedRng(20),
                                   limit=400_000)  # fmt: skip
    assert not result["error"], result
    assert writes == reference.writes and got == expected
    np.testing.assert_array_equal(
        resident.read_tensor(got, name), resident.read_tensor(expected, name)
    )
    engine_cycles = result["engine_latency"]
    other = result["cycles"] - result["engine_cycles"]
    print(
        f"\none tile ({name}, v1.1@64): {result['cycles']:,} sequencer cycles = "
        f"{result['engine_cycles']:,} waiting for the engine ({engine_cycles:,} engine cycles) "
        f"+ {other:,} fetch/DMA/byte-port cycles for {stats.loaded_bytes:,} bytes loaded and "
        f"{stats.stored_bytes:,} stored in {stats.dma_requests} rows ({stats.commands} commands); "
        f"overhead {result['cycles'] / engine_cycles:.2f}x the engine alone"
    )
    # the cost model fpga.compiler.traffic.sequential_cycles uses predicts it
    c = SEQUENCER_COSTS
    totals = transfer_totals(resident, commands=resident.commands[first:end])
    model = (
        stats.commands * c["command"]
        + totals["load_chunks"] * c["load_chunk"]
        + totals["store_chunks"] * c["store_chunk"]
        + load_commands(resident.commands[first:end]) * c["load"]
        + (stats.dma_requests - totals["store_rows"]) * c["row"]
        + totals["store_rows"] * c["store_row"]
    )
    assert abs(other - model) < 0.05 * other, (other, model)


def test_transfer_costs():
    """Cycle costs of the sequential version with a 20-cycle DRAM read latency, always ready:
    4 and 8 KiB LOADs and STOREs (cycles per chunk through the buffer ports, and per row: a
    LOAD's first row pays the read latency), a gather of 31 3-byte rows (conv1's im2col: cycles
    per pipelined row after the first), an END alone (fetch cost)."""
    costs = {}
    width = transfer_bytes(DEFAULT_CONFIG)
    cases = {
        "end": [command(Opcode.END)],
        "load_4k": [command(Opcode.LOAD, BufferSpace.ACT_IN, length=4096, dram_addr=0)],
        "load_8k": [command(Opcode.LOAD, BufferSpace.ACT_IN, length=8192, dram_addr=0)],
        "store_4k": [command(Opcode.STORE, BufferSpace.ACT_OUT, length=4096, dram_addr=0)],
        "store_8k": [command(Opcode.STORE, BufferSpace.ACT_OUT, length=8192, dram_addr=0)],
        # posted: a LOAD of other bytes goes on under the STORE, one of its bytes waits for it
        "store_then_load": [
            command(Opcode.STORE, BufferSpace.ACT_OUT, flags=Flag.POSTED, length=4096,
                    dram_addr=0),
            command(Opcode.LOAD, BufferSpace.ACT_IN, length=4096, dram_addr=8192),
        ],
        "store_then_load_back": [
            command(Opcode.STORE, BufferSpace.ACT_OUT, flags=Flag.POSTED, length=4096,
                    dram_addr=0),
            command(Opcode.LOAD, BufferSpace.ACT_IN, length=4096, dram_addr=2048),
        ],
        "store_16_rows": [
            command(Opcode.STORE, BufferSpace.ACT_OUT, flags=Flag.POSTED, length=256, count=16,
                    dram_addr=0, dram_stride=512, buffer_stride=256)
        ],
        "gather_31x3": [
            command(Opcode.LOAD, BufferSpace.ACT_IN, length=3, count=31, dram_addr=5,
                    dram_stride=2, buffer_stride=32)
        ],
        "windows_111x7": [
            command(Opcode.LOAD, BufferSpace.ACT_IN, flags=Flag.WINDOWS, length=7, count=111,
                    dram_addr=5, dram_stride=2, buffer_stride=152)
        ],
    }  # fmt: skip
    for name, records in cases.items():
        dram = bytearray(32768)
        pc = 16384
        blob = pack_commands([*records, command(Opcode.END)][: len(records) + (name != "end")])
        dram[pc : pc + len(blob)] = blob
        result, _ = run_sequencer(dram, pc, ByteEngine(), FixedRng(20))
        assert not result["error"], (name, result)
        costs[name] = result["cycles"]
    fetch = costs["end"]
    chunks_4k = 4096 // width
    per_load_chunk = (costs["load_8k"] - costs["load_4k"]) / chunks_4k
    per_store_chunk = (costs["store_8k"] - costs["store_4k"]) / chunks_4k
    load_row = costs["load_4k"] - 2 * fetch - chunks_4k * per_load_chunk  # load + row
    store_row = costs["store_4k"] - 2 * fetch - chunks_4k * per_store_chunk
    rows = np.arange(111)
    gather_chunks = int(row_chunks(rows[:31] * 32, 5 + rows[:31] * 2, 3, width, 16).sum())
    gather = costs["gather_31x3"] - 2 * fetch - gather_chunks * per_load_chunk
    per_gather_row = (gather - load_row) / 30  # each row after the first (pipelined)
    windows = costs["windows_111x7"] - 2 * fetch  # v1.0's conv1: 111 windows of 7 bytes
    window_chunks = int(row_chunks(rows * 152, 5 + rows * 2, 7, width, 16).sum())
    print(
        f"\nsequencer costs (DRAM read latency 20, {width}-byte buffer ports): fetch+decode of a "
        f"command {fetch} cycles; LOAD {per_load_chunk:.3f} cycles/chunk + {load_row:.0f} for "
        f"its first row (the read latency), STORE {per_store_chunk:.3f} cycles/chunk + "
        f"{store_row:.0f} per row; a 3-byte gather row after the first {per_gather_row:.2f} "
        f"cycles beyond its chunks (31 rows: {gather:.0f} cycles beyond their chunks); a WINDOWS "
        f"LOAD of 111 7-byte windows 2 apart (v1.0's conv1) {windows} cycles ({window_chunks} "
        f"chunks)"
    )
    # fpga.compiler.cost.SEQUENCER_COSTS (the whole-network estimate) are these numbers
    c = SEQUENCER_COSTS
    assert fetch == c["command"]
    assert abs(per_load_chunk - c["load_chunk"]) < 0.02
    assert abs(per_store_chunk - c["store_chunk"]) < 0.02
    assert abs(load_row - (c["load"] + c["row"])) < 1 and abs(store_row - c["store_row"]) < 1
    assert abs(per_gather_row - c["row"]) < 0.2
    model = c["load"] + c["row"] + window_chunks * c["load_chunk"] + 111 * c["window"]
    model += (110 * 2 + 7) * c["span_byte"]
    assert abs(windows - model) < 0.03 * windows, (windows, model)
    # a posted STORE: the LOAD after it moves meanwhile (fpga.compiler.traffic.device_cycles'
    # timeline), unless it reads the STORE's bytes back; rows back to back in the store mover
    posted_4k = costs["store_4k"] - fetch - (c["store_row"] - c["posted_row"])
    under = fetch + c["store_issue"] + costs["load_4k"]
    assert abs(costs["store_then_load"] - under) <= 3, (costs["store_then_load"], under)
    after = posted_4k + costs["load_4k"] - fetch
    assert abs(costs["store_then_load_back"] - after) <= 3, (costs["store_then_load_back"], after)
    rows = fetch + 16 * c["posted_row"] + 16 * 256 // width * c["store_chunk"]
    assert abs(costs["store_16_rows"] - rows) <= 2, (costs["store_16_rows"], rows)


def _random_program(rng, data_bytes, bases=(0, 0), split=False):
    """LOADs into any space, STOREs from ACT_OUT, RUNs: random lengths, counts, strides (rows
    may overlap), alignments; every row inside the DRAM and its buffer. A fifth of the LOADs
    (STOREs) address DRAM relative to the input (output) slot at ``bases``; half the STOREs are
    POSTED. ``split``: SPLIT RUNs
    in random halves and WAITs, and a WAIT before each LOAD/STORE that touches what the run under
    way owns (as the compiler puts them)."""
    sizes = buffer_sizes(DEFAULT_CONFIG)
    records = []
    for _ in range(rng.randint(8, 20)):
        kind = rng.random()
        if kind < 0.15:
            flags = 0
            if split and rng.random() < 0.7:  # double buffering: random halves
                flags = Flag.SPLIT | sum(f for f in HALF_SPACES.values() if rng.random() < 0.5)
            records.append(command(Opcode.RUN, flags=int(flags)))
            continue
        if split and kind < 0.2:
            records.append(command(Opcode.WAIT))
            continue
        op = Opcode.LOAD if kind < 0.65 else Opcode.STORE
        space = rng.choice(list(BufferSpace)) if op == Opcode.LOAD else BufferSpace.ACT_OUT
        count, length = rng.randint(1, 4), rng.choice([1, 2, 7, 16, 17, rng.randint(1, 90)])
        dram_stride, buffer_stride = rng.randint(0, 70), rng.randint(0, 70)
        if length + (count - 1) * buffer_stride > sizes[space]:  # DESCRIPTOR: 32 bytes
            count, buffer_stride, length = 1, 0, min(length, sizes[space])
        dram_addr = rng.randrange(0, data_bytes - length - (count - 1) * dram_stride)
        room = sizes[space] if split and rng.random() < 0.5 else min(sizes[space], 2048)
        buffer_room = room - length - (count - 1) * buffer_stride
        buffer_offset = rng.randrange(0, max(1, buffer_room))
        flags = 0
        if op == Opcode.LOAD and rng.random() < 0.3:
            flags = Flag.WINDOWS  # the same bytes, the span read once
        if op == Opcode.STORE and rng.random() < 0.5:
            flags = Flag.POSTED  # the same bytes, the next commands go on meanwhile
        base = bases[op == Opcode.STORE]
        if rng.random() < 0.2 and dram_addr >= base:
            flags |= Flag.OUTPUT if op == Opcode.STORE else Flag.INPUT
            dram_addr -= base  # the same bytes, relocated
        if rng.random() < 0.05:
            length = 0  # moves nothing
        records.append(
            command(
                op,
                space,
                flags=flags,
                length=length,
                count=count,
                dram_addr=dram_addr,
                dram_stride=dram_stride,
                buffer_offset=buffer_offset,
                buffer_stride=buffer_stride,
            )
        )
    return _waits([*records, command(Opcode.END)])


def _waits(records):
    """A WAIT before each LOAD/STORE that touches what the SPLIT run under way owns."""
    out, owned = [], None
    for rec in records:
        op = int(rec["opcode"])
        rows = (int(rec["space"]), int(rec["buffer_offset"]), int(rec["length"]))
        if op in (Opcode.LOAD, Opcode.STORE) and touches(
            owned, *rows, int(rec["count"]), int(rec["buffer_stride"])
        ):
            out.append(command(Opcode.WAIT))
            owned = None
        if op == Opcode.RUN:
            flags = int(rec["flags"])
            owned = run_claims(flags, DEFAULT_CONFIG) if flags & Flag.SPLIT else None
        elif op == Opcode.WAIT:
            owned = None
        out.append(rec)
    return out


@pytest.mark.parametrize("split", [False, True], ids=["sequential", "split"])
def test_random_programs_equal_the_reference_executor(split):
    """Random programs (``split``: SPLIT RUNs in random halves that compute while the next
    commands move, WAITs) against the reference executor: the same writes, the same DRAM."""
    seed = _seed()
    rng = random.Random(seed)
    latency = 300 if split else 5  # long enough for the next commands to run under it
    for _ in range(3):
        dram = bytearray(rng.randbytes(16384))
        pc = 12288
        bases = (rng.randrange(0, 4096), rng.randrange(0, 4096))
        blob = pack_commands(_random_program(rng, pc, bases, split))
        dram[pc : pc + len(blob)] = blob
        expected, reference = bytearray(dram), ByteLog(ByteEngine(latency))
        run_commands(expected, reference, pc, input_base=bases[0], output_base=bases[1])
        result, writes = run_sequencer(
            dram, pc, ByteEngine(latency), rng, write_stall=0.3, bases=bases
        )
        assert not result["error"], (seed, result)
        assert writes == reference.writes, seed
        assert dram == expected, seed


@pytest.mark.parametrize(
    "space,flags",
    [(BufferSpace.ACT_IN, 0), (BufferSpace.ACT_OUT, 0), (BufferSpace.ACT_OUT, Flag.POSTED)],
    ids=["load", "store", "posted-store"],
)
def test_a_hazard_is_refused_not_run(space, flags):
    """A LOAD (STORE, POSTED or not) into the half a SPLIT run owns with no WAIT between: the
    reference executor and the checker's rule refuse it, and the device ends in ENGINE (the
    engine's error) naming that command, never a hang or a silent overwrite; with the WAIT it
    runs."""
    from fpga.spec.commands import ResidentError

    op = Opcode.LOAD if space == BufferSpace.ACT_IN else Opcode.STORE
    owned = run_claims(Flag.SPLIT | Flag.HIGH_ACT_IN, DEFAULT_CONFIG)[space]
    move = command(
        op, space, flags=flags, length=16, dram_addr=2048, buffer_offset=owned.start + 64
    )
    for wait in (False, True):
        program = [command(Opcode.RUN, flags=int(Flag.SPLIT | Flag.HIGH_ACT_IN))]
        program += [command(Opcode.WAIT)] * wait + [move, command(Opcode.END)]
        dram = bytearray(random.Random(3).randbytes(8192))
        pc = 4096
        dram[pc : pc + len(program) * COMMAND_BYTES] = pack_commands(program)
        expected = bytearray(dram)
        if not wait:
            with pytest.raises(ResidentError, match="owns"):
                run_commands(expected, ByteLog(ByteEngine(300)), pc)
        else:
            run_commands(expected, ByteLog(ByteEngine(300)), pc)
        result, _ = run_sequencer(dram, pc, ByteEngine(300), FixedRng(20), limit=5000)
        if wait:
            assert not result["error"] and dram == expected, result
        else:
            assert result["code"] == SequencerError.ENGINE, result
            assert result["pc"] == pc + COMMAND_BYTES  # the command that touched it


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_many_short_load_rows_are_pipelined(aligned):
    """A LOAD of 64 rows of 16 bytes (a channel-group slice of an HWC tensor: one row a pixel):
    with random write-port stalls and random DRAM latency it equals the reference executor; with
    a fixed 20-cycle latency the rows' reads overlap (far less than one latency a row)."""
    seed = _seed()
    rng = random.Random(seed)
    start = 4096 if aligned else 4103
    program = [
        command(Opcode.LOAD, BufferSpace.ACT_IN, length=16, count=64, dram_addr=start,
                dram_stride=48, buffer_offset=0 if aligned else 3, buffer_stride=16),
        command(Opcode.STORE, BufferSpace.ACT_OUT, length=16, count=4, dram_addr=256,
                dram_stride=32, buffer_offset=0, buffer_stride=16),
        command(Opcode.LOAD, BufferSpace.WEIGHT, length=5, count=9, dram_addr=3001,
                dram_stride=7, buffer_offset=11, buffer_stride=6),
        command(Opcode.END),
    ]  # fmt: skip
    pc = 12288
    for fixed in (False, True):
        dram = bytearray(rng.randbytes(16384))
        dram[pc : pc + len(program) * COMMAND_BYTES] = pack_commands(program)
        expected, reference = bytearray(dram), ByteLog(ByteEngine())
        run_commands(expected, reference, pc)
        result, writes = run_sequencer(
            dram, pc, ByteEngine(), FixedRng(20) if fixed else rng,
            write_stall=0.0 if fixed else 0.3,
        )  # fmt: skip
        assert not result["error"], (seed, result)
        assert writes == reference.writes, seed
        assert dram == expected, seed
    # the 64-row LOAD alone, fixed latency, no stalls
    dram = bytearray(rng.randbytes(16384))
    alone = [program[0], command(Opcode.END)]
    dram[pc : pc + 2 * COMMAND_BYTES] = pack_commands(alone)
    result, _ = run_sequencer(dram, pc, ByteEngine(), FixedRng(20))
    end, _ = run_sequencer(bytearray(pack_commands([command(Opcode.END)]) + bytes(16352)), 0,
                           ByteEngine(), FixedRng(20))  # fmt: skip
    load = result["cycles"] - end["cycles"] - SEQUENCER_COSTS["command"]
    width = transfer_bytes(DEFAULT_CONFIG)
    rows = np.arange(64)
    chunks = int(row_chunks(rows * 16 + (0 if aligned else 3), start + rows * 48, 16, width,
                            WORD_BYTES).sum())  # fmt: skip
    print(
        f"\n64 LOAD rows of 16 bytes ({'aligned' if aligned else 'unaligned'}), DRAM latency 20: "
        f"{load} cycles ({chunks} chunks; {(load - chunks) / 64:.2f} cycles a row beyond them)"
    )
    assert load < 64 * 10


@pytest.mark.parametrize("code", [SequencerError.DRAM_RANGE, SequencerError.BUFFER_RANGE])
def test_a_refused_row_comes_after_the_rows_before_it(code):
    """A LOAD whose fourth row is refused (past the DRAM's end, or past its buffer space), random
    latency and write-port stalls: the three rows before it were asked for while the earlier ones
    moved, and all their bytes are written, in order, before ``done`` with the error."""
    rng = random.Random(_seed())
    dram = bytearray(rng.randbytes(8192))
    if code == SequencerError.DRAM_RANGE:
        rec = command(
            Opcode.LOAD,
            BufferSpace.ACT_IN,
            length=16,
            count=5,
            dram_addr=7976,
            dram_stride=100,
            buffer_offset=5,
            buffer_stride=16,
        )
    else:
        size = buffer_sizes(DEFAULT_CONFIG)[BufferSpace.WEIGHT]
        rec = command(
            Opcode.LOAD,
            BufferSpace.WEIGHT,
            length=16,
            count=5,
            dram_addr=1001,
            dram_stride=100,
            buffer_offset=size - 3 * 20 - 4,
            buffer_stride=20,
        )
    # fmt: skip
    dram[0:COMMAND_BYTES] = pack_commands([rec])
    result, writes = run_sequencer(dram, 0, ByteEngine(), rng, write_stall=0.3, limit=5000)
    assert result["error"] and result["code"] == code, result
    space, offset = int(rec["space"]), int(rec["buffer_offset"])
    expected = [
        (
            space,
            offset + r * int(rec["buffer_stride"]) + i,
            dram[int(rec["dram_addr"]) + r * 100 + i],
        )
        for r in range(3)
        for i in range(16)
    ]
    assert writes == expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_what_a_posted_store_writes_is_what_the_next_loads_read(seed):
    """A STORE is posted (the commands after it go on while the store mover moves its rows): a
    LOAD row, a WINDOWS span and the next STORE that meet its bytes wait for it, a RUN waits
    for it, others go on; with random DRAM latencies and write-port stalls, the buffer writes
    and the DRAM equal the reference executor's."""
    rng = random.Random(seed)
    act_in, act_out = BufferSpace.ACT_IN, BufferSpace.ACT_OUT
    program = [
        command(Opcode.RUN),  # ACT_OUT from the made-up run
        command(Opcode.STORE, act_out, flags=Flag.POSTED, length=1000, dram_addr=3),
        command(Opcode.LOAD, act_in, length=600, dram_addr=500),  # reads the STORE's bytes
        command(Opcode.STORE, act_out, flags=Flag.POSTED, length=40, count=12, dram_addr=2000,
                dram_stride=64, buffer_offset=100, buffer_stride=40),
        command(Opcode.LOAD, act_in, flags=Flag.WINDOWS, length=7, count=20, dram_addr=2030,
                dram_stride=3, buffer_offset=1000, buffer_stride=16),  # meets the last row
        command(Opcode.STORE, act_out, flags=Flag.POSTED, length=512, dram_addr=4000),
        command(Opcode.LOAD, act_in, length=256, dram_addr=7000, buffer_offset=2000),  # apart
        command(Opcode.RUN),  # waits for the STORE's reads of ACT_OUT
        # over the one before
        command(Opcode.STORE, act_out, flags=Flag.POSTED, length=300, dram_addr=4100),
        command(Opcode.LOAD, act_in, length=300, dram_addr=4000, buffer_offset=3000),
    ]  # fmt: skip
    dram = bytearray(rng.randbytes(16384))
    pc = 12288
    dram[pc : pc + (len(program) + 1) * COMMAND_BYTES] = pack_commands(
        [*program, command(Opcode.END)]
    )
    expected, reference = bytearray(dram), ByteLog(ByteEngine(40))
    run_commands(expected, reference, pc)
    result, writes = run_sequencer(dram, pc, ByteEngine(40), rng, write_stall=0.3)
    assert not result["error"], result
    assert writes == reference.writes
    assert dram == expected

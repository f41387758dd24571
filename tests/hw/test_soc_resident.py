"""The resident-mode SoC (hw.soc.top with memory) under Amaranth's simulator: link -> sequencer ->
DMA -> a model of LiteDRAM's native port (tests.hw.test_dram.NativePortModel), spoken to with
fpga.spec.protocol's frames. The whole network in resident mode runs on the Verilator board
(tests/e2e/test_resident.py); here the protocol's DRAM commands and refusals, fast."""

import random
import zlib

from amaranth.sim import Simulator

from fpga.spec.commands import COMMAND_BYTES, Flag, command, pack_commands
from fpga.spec.commands import Opcode as Command
from fpga.spec.config import SMALL_CONFIG
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
    RESIDENT_RUN_REQUEST,
    RESIDENT_RUN_RESPONSE,
    RESPONSE_FLAG,
    DeviceInfo,
    FrameParser,
    Opcode,
    Status,
    encode_frame,
    mem_read_payload,
    mem_write_payload,
    parse_status,
)
from hw.soc.sequencer import SequencerError
from hw.soc.top import ExternalMemory, SoC
from tests.hw.test_dram import WORD_BYTES, NativePortModel

DRAM_BYTES = 1 << 16


def exchange(requests: list[bytes], dram: bytearray, seed: int = 7, limit: int = 400_000):
    """Send each request frame, wait for its answer; returns the answers (status, payload)."""
    memory = ExternalMemory(8 * WORD_BYTES, (DRAM_BYTES // WORD_BYTES - 1).bit_length(), len(dram))
    dut = SoC(SMALL_CONFIG, link="stream", timeout_cycles=1 << 12, memory=memory)
    model = NativePortModel(random.Random(seed), dram)
    answers = []

    async def native_port(ctx):
        await model.run(ctx, dut.dram)

    async def host(ctx):
        parser = FrameParser()
        ctx.set(dut.tx_ready, 1)
        for request in requests:
            position, cycles = 0, 0
            while True:
                ctx.set(dut.rx_valid, position < len(request))
                ctx.set(dut.rx_data, request[position] if position < len(request) else 0)
                _, _, rx_ready, tx_valid, tx_data = await ctx.tick().sample(
                    dut.rx_ready, dut.tx_valid, dut.tx_data
                )
                if rx_ready and position < len(request):
                    position += 1
                if tx_valid:
                    parser.feed(bytes([tx_data]))
                if (frame := parser.pop()) is not None:
                    assert frame.opcode == request[5] | RESPONSE_FLAG
                    answers.append((Status(frame.payload[0]), frame.payload[1:]))
                    break
                cycles += 1
                assert cycles < limit, f"no answer to request {len(answers)} (a hang)"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(native_port, background=True)
    sim.add_testbench(host)
    sim.run()
    return answers


def commit(seq, nbytes, crc, program_addr=0, fingerprint=b"modelfp!"):
    payload = MODEL_COMMIT_REQUEST.pack(
        bytes=nbytes, crc=crc, program_addr=program_addr, fingerprint=fingerprint
    )
    return encode_frame(seq, Opcode.MODEL_COMMIT, payload)


def start(seq, input_addr=0x8000, output_addr=0x9000):
    """RUN_RESIDENT with the run's input and output slots (answered at once)."""
    payload = RESIDENT_RUN_REQUEST.pack(input_addr=input_addr, output_addr=output_addr)
    return encode_frame(seq, Opcode.RUN_RESIDENT, payload)


def wait(seq):
    return encode_frame(seq, Opcode.RESIDENT_WAIT)


def test_dram_writes_reads_model_commit_and_refusals():
    rng = random.Random(3)
    dram = bytearray(rng.randbytes(DRAM_BYTES))
    data = rng.randbytes(300)
    program = pack_commands([command(Command.END)])
    bad_program = pack_commands(
        [command(Command.LOAD, BufferSpace.ACT_IN, length=8, dram_addr=DRAM_BYTES - 4)]
    )
    model = bytes(64) + program  # the "model": 64 bytes of blobs, then the program at 64
    crc = zlib.crc32(model)
    requests = [
        encode_frame(1, Opcode.IDENTIFY),
        encode_frame(2, Opcode.MEM_WRITE, mem_write_payload(1001, data)),  # unaligned
        encode_frame(3, Opcode.MEM_READ, mem_read_payload(1001 - 7, 300 + 9)),
        start(4),  # nothing committed yet
        encode_frame(5, Opcode.MEM_WRITE, mem_write_payload(0, model)),
        commit(6, len(model), crc ^ 1),  # wrong CRC: refused, nothing to run
        start(7),
        commit(8, len(model), crc, program_addr=64),
        encode_frame(9, Opcode.STATUS),
        start(10),  # just END
        wait(11),
        encode_frame(12, Opcode.MEM_WRITE, mem_write_payload(DRAM_BYTES - 2, b"abcd")),
        encode_frame(13, Opcode.STATUS),
        encode_frame(14, Opcode.MEM_WRITE, mem_write_payload(len(model), bad_program)),
        commit(15, len(model) + COMMAND_BYTES, zlib.crc32(model + bad_program), 64 + 32),
        start(16),  # its LOAD runs past the DRAM
        wait(17),
        start(18, input_addr=len(model) - 1),  # an input slot inside the model
        encode_frame(19, Opcode.MEM_WRITE, mem_write_payload(10, b"x")),  # into the model
        start(20),
        wait(21),
        encode_frame(22, Opcode.MEM_WRITE, b"\x00\x00"),  # shorter than its header
        encode_frame(23, Opcode.RUN_RESIDENT),  # no slots
    ]
    answers = exchange(requests, dram)
    statuses = [status for status, _ in answers]
    assert statuses == [
        Status.OK,
        Status.OK,
        Status.OK,
        Status.NO_MODEL,
        Status.OK,
        Status.BAD_MODEL,
        Status.NO_MODEL,
        Status.OK,
        Status.OK,
        Status.OK,  # started
        Status.OK,  # its end
        Status.DEVICE_ERROR,
        Status.OK,
        Status.OK,
        Status.OK,
        Status.OK,  # started
        Status.DEVICE_ERROR,  # its end: refused
        Status.BAD_ADDRESS,
        Status.OK,
        Status.NO_MODEL,
        Status.NO_MODEL,
        Status.BAD_LENGTH,
        Status.BAD_LENGTH,
    ]
    info = DeviceInfo.parse(answers[0][1])
    assert info.dram_bytes == DRAM_BYTES
    # the bytes went to DRAM and came back, neighbours untouched
    assert dram[1001 : 1001 + 300] == data
    assert answers[2][1] == bytes(dram[1001 - 7 : 1001 + 300 + 2])
    # the device's CRC is the CRC of what DRAM holds, whatever the host claimed
    assert MODEL_COMMIT_RESPONSE.unpack(answers[5][1])["crc"] == crc
    status = parse_status(answers[8][1])
    assert status["model_loaded"] == 1 and status["model_bytes"] == len(model)
    assert status["model_fingerprint"] == b"modelfp!".hex()
    assert answers[9][1] == b""  # RUN_RESIDENT answers with its status alone
    run = RESIDENT_RUN_RESPONSE.unpack(answers[10][1])
    assert run["error_code"] == 0 and run["host_cycles"] == 0 and run["engine_cycles"] == 0
    assert run["pc"] == 64
    assert 0 < run["dma_wait_cycles"] < run["cycles"]
    # a write past the DRAM's end is refused whole and reported in STATUS
    assert dram[-2:] != b"ab"
    status = parse_status(answers[12][1])
    assert status["sequencer_error"] == SequencerError.DRAM_RANGE.value
    assert status["sequencer_pc"] == 0 and status["running"] == 0  # a host transfer
    refused = RESIDENT_RUN_RESPONSE.unpack(answers[16][1])
    assert refused["error_code"] == SequencerError.DRAM_RANGE.value
    assert refused["pc"] == 64 + 32
    assert MEM_WRITE_REQUEST.size == 4 and MEM_READ_REQUEST.size == 6


def test_link_transfers_overlap_a_running_program():
    """While a program runs, MEM_WRITE/MEM_READ are served between its commands (host_cycles),
    STATUS says it runs, and what would disturb it is answered BUSY; a replayed RUN_RESIDENT
    (same seq) does not start it again; INPUT/OUTPUT-flagged commands go to the run's slots."""
    rng = random.Random(5)
    dram = bytearray(rng.randbytes(DRAM_BYTES))
    input_addr, output_addr = 0x6000, 0x7000
    loads = [
        command(
            Command.LOAD,
            BufferSpace.ACT_IN,
            length=256,
            count=8,
            dram_addr=64 * k,
            dram_stride=512,
            buffer_stride=256,
        )
        for k in range(40)
    ]
    relocated = [
        command(Command.LOAD, BufferSpace.ACT_IN, flags=Flag.INPUT, length=100, dram_addr=16),
        command(Command.STORE, BufferSpace.ACT_OUT, flags=Flag.OUTPUT, length=48, dram_addr=32),
    ]
    program = pack_commands([*loads, *relocated, command(Command.END)])
    model = bytes(64) + program  # the program at 64
    data = rng.randbytes(200)
    before = bytes(dram)
    requests = [
        encode_frame(1, Opcode.MEM_WRITE, mem_write_payload(0, model[:1000])),
        encode_frame(2, Opcode.MEM_WRITE, mem_write_payload(1000, model[1000:])),
        commit(3, len(model), zlib.crc32(model), program_addr=64),
        start(4, input_addr, output_addr),
        encode_frame(5, Opcode.STATUS),
        encode_frame(6, Opcode.MEM_WRITE, mem_write_payload(0x5003, data)),
        encode_frame(7, Opcode.MEM_READ, mem_read_payload(0x5003, len(data))),
        commit(8, len(model), zlib.crc32(model), program_addr=64),
        encode_frame(9, Opcode.WRITE, bytes(5) + b"z"),
        encode_frame(10, Opcode.MEM_WRITE, mem_write_payload(100, b"q")),  # into the model
        start(4, input_addr, output_addr),  # the replay of the running one's request
        start(12, input_addr, output_addr),  # another run
        encode_frame(13, Opcode.STATUS),
        wait(14),
        encode_frame(15, Opcode.STATUS),
    ]
    answers = exchange(requests, dram, limit=100_000)
    statuses = [status for status, _ in answers]
    B, OK = Status.BUSY, Status.OK
    assert statuses == [OK, OK, OK, OK, OK, OK, OK, B, B, B, OK, B, OK, OK, OK]
    assert parse_status(answers[4][1])["running"] == 1
    assert parse_status(answers[12][1])["running"] == 1  # still running: all of it overlapped
    assert answers[6][1] == data and dram[0x5003 : 0x5003 + len(data)] == data
    result = RESIDENT_RUN_RESPONSE.unpack(answers[13][1])
    assert result["error_code"] == 0 and result["pc"] == 64 + len(loads + relocated) * 32
    assert 0 < result["host_cycles"] < result["cycles"]
    final = parse_status(answers[14][1])
    assert final["running"] == 0 and final["model_loaded"] == 1  # the refused write kept it
    # the OUTPUT STORE went to the run's slot (ACT_OUT starts zeroed), not to address 32
    assert dram[output_addr + 32 : output_addr + 80] == bytes(48)
    assert dram[output_addr : output_addr + 32] == before[output_addr : output_addr + 32]
    assert dram[len(model) : 0x5000] == before[len(model) : 0x5000]

"""The resident-mode SoC (hw.top with memory) under Amaranth's simulator: link -> sequencer ->
DMA -> a model of LiteDRAM's native port (tests.hw.test_dram.NativePortModel), spoken to with
fpga.protocol's frames. The whole network in resident mode runs on the Verilator board
(tests/e2e/test_resident.py); here the protocol's DRAM commands and refusals, fast."""

import random
import zlib

from amaranth.sim import Simulator

from fpga.config import SMALL_CONFIG
from fpga.layout import BufferSpace
from fpga.protocol import (
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
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
from fpga.resident import COMMAND_BYTES, command, pack_commands
from fpga.resident import Opcode as Command
from hw.sequencer import SequencerError
from hw.top import ExternalMemory, SoC
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
        encode_frame(4, Opcode.RUN_RESIDENT),  # nothing committed yet
        encode_frame(5, Opcode.MEM_WRITE, mem_write_payload(0, model)),
        commit(6, len(model), crc ^ 1),  # wrong CRC: refused, nothing to run
        encode_frame(7, Opcode.RUN_RESIDENT),
        commit(8, len(model), crc, program_addr=64),
        encode_frame(9, Opcode.STATUS),
        encode_frame(10, Opcode.RUN_RESIDENT),  # just END
        encode_frame(11, Opcode.MEM_WRITE, mem_write_payload(DRAM_BYTES - 2, b"abcd")),
        encode_frame(12, Opcode.STATUS),
        encode_frame(13, Opcode.MEM_WRITE, mem_write_payload(len(model), bad_program)),
        commit(14, len(model) + COMMAND_BYTES, zlib.crc32(model + bad_program), 64 + 32),
        encode_frame(15, Opcode.RUN_RESIDENT),  # its LOAD runs past the DRAM
        encode_frame(16, Opcode.MEM_WRITE, mem_write_payload(10, b"x")),  # into the model
        encode_frame(17, Opcode.RUN_RESIDENT),
        encode_frame(18, Opcode.MEM_WRITE, b"\x00\x00"),  # shorter than its header
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
        Status.OK,
        Status.DEVICE_ERROR,
        Status.OK,
        Status.OK,
        Status.OK,
        Status.DEVICE_ERROR,
        Status.OK,
        Status.NO_MODEL,
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
    run = RESIDENT_RUN_RESPONSE.unpack(answers[9][1])
    assert run["error_code"] == 0 and run["engine_cycles"] == 0 and run["pc"] == 64
    assert 0 < run["dma_wait_cycles"] < run["cycles"]
    # a write past the DRAM's end is refused whole and reported in STATUS
    assert dram[-2:] != b"ab"
    status = parse_status(answers[11][1])
    assert status["sequencer_error"] == SequencerError.DRAM_RANGE.value
    refused = RESIDENT_RUN_RESPONSE.unpack(answers[14][1])
    assert refused["error_code"] == SequencerError.DRAM_RANGE.value
    assert refused["pc"] == 64 + 32
    assert MEM_WRITE_REQUEST.size == 4 and MEM_READ_REQUEST.size == 6

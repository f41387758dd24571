"""The link controller (hw.soc.link) under Amaranth's simulator, spoken to with fpga.spec.protocol's
encoder and answered through its one frame decoder: the gateware's views of the protocol
layouts and its amaranth.lib.crc CRC agree with the host's struct/zlib definitions."""

from amaranth.sim import Simulator

from fpga.spec.config import SMALL_CONFIG
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    MODEL_COMMIT_REQUEST,
    RESIDENT_RUN_REQUEST,
    RESPONSE_FLAG,
    RUN_RESPONSE,
    DramState,
    FrameParser,
    Opcode,
    Status,
    encode_frame,
    identify_payload,
    mem_read_payload,
    mem_write_payload,
    parse_status,
    read_payload,
    write_payload,
)
from hw.soc.link import LinkController

RUN_CYCLES = 123_456


def exchange(
    requests: list[bytes],
    baud: int = 0,
    read_byte=lambda addr: addr * 7 & 0xFF,
    dram_bytes: int = 0,
    inputs: dict | None = None,
):
    """Send the request bytes to a LinkController whose engine side is a stand-in; returns
    (decoded response frames, engine writes as (space, addr, data)). ``inputs``: port name ->
    value held during the exchange (e.g. the DRAM state of a resident controller)."""
    dut = LinkController(SMALL_CONFIG, timeout_cycles=64, baud=baud, dram_bytes=dram_bytes)
    stream = b"".join(requests)
    parser = FrameParser()
    writes = []

    async def bench(ctx):
        position, idle, pending, run_left = 0, 0, None, None
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.write.ready, 1)  # the engine takes every chunk
        for name, value in (inputs or {}).items():
            ctx.set(getattr(dut, name), value)
        while idle < 200:
            ctx.set(dut.rx.valid, position < len(stream))
            ctx.set(dut.rx.payload, stream[position] if position < len(stream) else 0)
            ctx.set(dut.read.response.valid, pending is not None)
            answer = read_byte(pending) if pending is not None else 0
            ctx.set(dut.read.response.payload.data, answer)
            ctx.set(dut.done, run_left == 0)
            ctx.set(dut.cycles, RUN_CYCLES)
            rx_ready, tx_valid, tx_data = (
                ctx.get(s) for s in (dut.rx.ready, dut.tx.valid, dut.tx.payload)
            )
            chunk, request = dut.write.payload, dut.read.request
            if ctx.get(dut.write.valid):
                writes.append((ctx.get(chunk.space), ctx.get(chunk.addr), ctx.get(chunk.data)))
            pending = ctx.get(request.payload.addr) if ctx.get(request.valid) else None
            run_left = 5 if ctx.get(dut.start) else (None if not run_left else run_left - 1)
            await ctx.tick()
            if rx_ready and position < len(stream):
                position += 1
            if tx_valid:
                parser.feed(bytes([tx_data]))
            busy = position < len(stream) or tx_valid or run_left is not None
            idle = 0 if busy else idle + 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    frames = []
    while (frame := parser.pop()) is not None:
        frames.append(frame)
    assert not parser.buffer
    return frames, writes


def test_link_controller_speaks_the_protocol_layouts():
    requests = [
        b"\x00\x13\xa5garbage" + encode_frame(1, Opcode.IDENTIFY),
        encode_frame(2, Opcode.WRITE, write_payload(BufferSpace.ACT_IN, 0x1234, b"abc")),
        encode_frame(3, Opcode.READ, read_payload(BufferSpace.ACT_OUT, 40, 6)),
        encode_frame(4, Opcode.RUN),
        encode_frame(5, 0x7E),  # unknown opcode
        encode_frame(6, Opcode.READ, b"\x01"),  # too short
        encode_frame(7, Opcode.STATUS),
    ]
    bad = bytearray(encode_frame(8, Opcode.IDENTIFY))
    bad[-2] ^= 0x10
    requests += [bytes(bad), encode_frame(9, Opcode.STATUS)]
    frames, writes = exchange(requests, baud=3_000_000)
    answers = {frame.seq: (frame.opcode, frame.payload) for frame in frames}
    assert sorted(answers) == list(range(1, 10))
    ok = bytes([Status.OK])
    assert answers[1] == (
        Opcode.IDENTIFY | RESPONSE_FLAG,
        ok + identify_payload(SMALL_CONFIG, 3_000_000),
    )
    assert answers[2] == (Opcode.WRITE | RESPONSE_FLAG, ok)
    assert writes == [(BufferSpace.ACT_IN, 0x1234 + i, b) for i, b in enumerate(b"abc")]
    assert answers[3] == (
        Opcode.READ | RESPONSE_FLAG,
        ok + bytes(a * 7 & 0xFF for a in range(40, 46)),
    )
    opcode, payload = answers[4]
    assert opcode == Opcode.RUN | RESPONSE_FLAG and payload[:1] == ok
    assert RUN_RESPONSE.unpack(payload[1:]) == {"cycles": RUN_CYCLES, "engine_error": 0}
    assert answers[5][1] == bytes([Status.BAD_OPCODE])
    assert answers[6][1] == bytes([Status.BAD_LENGTH])
    before = parse_status(answers[7][1][1:])
    assert before["frames_ok"] == 7 and before["bad_opcodes"] == 1 and before["crc_errors"] == 0
    assert answers[8][1] == bytes([Status.BAD_CRC])
    after = parse_status(answers[9][1][1:])
    assert after["frames_ok"] == 8 and after["crc_errors"] == 1


def test_resident_opcodes_wait_for_the_dram_and_status_says_why():
    """Before the DRAM controller is initialized (or after its calibration failed) the resident
    opcodes answer DRAM_NOT_READY at once (they do not hang on the DMA), and STATUS reports the
    DRAM's state; a streamed opcode still works."""
    resident = [
        encode_frame(1, Opcode.MEM_WRITE, mem_write_payload(0, b"abcd")),
        encode_frame(2, Opcode.MEM_READ, mem_read_payload(0, 4)),
        encode_frame(3, Opcode.MODEL_COMMIT, bytes(MODEL_COMMIT_REQUEST.size)),
        encode_frame(4, Opcode.RUN_RESIDENT, bytes(RESIDENT_RUN_REQUEST.size)),
        encode_frame(5, Opcode.STATUS),
        encode_frame(6, Opcode.WRITE, write_payload(BufferSpace.ACT_IN, 0, b"x")),
    ]
    for inputs, state in (
        ({"dram_ready": 0, "dram_failed": 0}, DramState.INITIALIZING),
        ({"dram_ready": 0, "dram_failed": 1}, DramState.FAILED),
    ):
        frames, writes = exchange(resident, dram_bytes=1 << 20, inputs=inputs)
        answers = {frame.seq: frame.payload for frame in frames}
        assert sorted(answers) == list(range(1, 7)), state
        for seq in (1, 2, 3, 4):
            assert answers[seq] == bytes([Status.DRAM_NOT_READY]), (state, seq)
        assert parse_status(answers[5][1:])["dram_state"] == state
        assert answers[6] == bytes([Status.OK]) and writes == [(BufferSpace.ACT_IN, 0, ord("x"))]
    # ready: RUN_RESIDENT gets past the DRAM check (no model yet), STATUS says READY
    frames, _ = exchange(
        [
            encode_frame(1, Opcode.RUN_RESIDENT, bytes(RESIDENT_RUN_REQUEST.size)),
            encode_frame(2, Opcode.STATUS),
        ],
        dram_bytes=1 << 20,
        inputs={"dram_ready": 1},
    )
    answers = {frame.seq: frame.payload for frame in frames}
    assert answers[1] == bytes([Status.NO_MODEL])
    assert parse_status(answers[2][1:])["dram_state"] == DramState.READY
    # a streamed-only controller has no DRAM
    frames, _ = exchange([encode_frame(1, Opcode.STATUS)])
    assert parse_status(frames[0].payload[1:])["dram_state"] == DramState.NONE

"""cocotb bench: the SoC with its UART PHY against an independent UART model (cocotbext-uart).

cocotbext-uart's UartSource sends an IDENTIFY request and a WRITE/READ round trip bit by bit;
its UartSink decodes the SoC's answers, which go through fpga.spec.protocol's one frame decoder and
must carry the right payload. ``UART_BAUD`` and ``CONFIG`` (the AcceleratorConfig as JSON, its
clock included) come from the pytest runner; clock/baud need not be whole (12 Mbaud from
100 MHz: the PHY's bit timer is fractional).
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.uart import UartSink, UartSource

from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    RESPONSE_FLAG,
    FrameParser,
    Opcode,
    Status,
    clock_hz,
    encode_frame,
    identify_payload,
    read_payload,
    write_payload,
)


async def receive_frame(sink, parser, cycles_budget, dut):
    """The next whole frame from the UART sink (fpga.spec.protocol.FrameParser)."""
    for _ in range(cycles_budget // 100):
        await ClockCycles(dut.clk, 100)
        parser.feed(sink.read_nowait(sink.count()))
        frame = parser.pop()
        if frame is not None:
            return frame.seq, frame.opcode, frame.payload
    raise AssertionError(f"no frame within {cycles_budget} cycles ({bytes(parser.buffer)!r})")


@cocotb.test()
async def uart_round_trip(dut):
    baud = int(os.environ["UART_BAUD"])
    config = AcceleratorConfig(**json.loads(os.environ["CONFIG"]))
    hz = clock_hz(config)
    period_ps = round(1e12 / hz)
    cocotb.start_soon(Clock(dut.clk, period_ps, unit="ps").start())
    source = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    parser = FrameParser()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    frame_cycles = int(10 * hz / baud) * 20  # cycles per byte, with margin per byte

    await source.write(b"\x00\x13garbage" + encode_frame(7, Opcode.IDENTIFY))
    seq, op, payload = await receive_frame(sink, parser, 80 * frame_cycles, dut)
    assert (seq, op) == (7, Opcode.IDENTIFY | RESPONSE_FLAG)
    assert payload == bytes([Status.OK]) + identify_payload(config, baud)

    # a WRITE is acknowledged; a READ of ACT_OUT returns its reset contents (zeros)
    await source.write(encode_frame(8, Opcode.WRITE, write_payload(BufferSpace.ACT_IN, 0, b"xyz")))
    seq, op, payload = await receive_frame(sink, parser, 40 * frame_cycles, dut)
    assert (seq, op, payload) == (8, Opcode.WRITE | RESPONSE_FLAG, bytes([Status.OK]))
    await source.write(encode_frame(9, Opcode.READ, read_payload(BufferSpace.ACT_OUT, 0, 5)))
    seq, op, payload = await receive_frame(sink, parser, 40 * frame_cycles, dut)
    assert (seq, op, payload) == (9, Opcode.READ | RESPONSE_FLAG, bytes([Status.OK]) + bytes(5))

    # a corrupted frame is answered with BAD_CRC and changes nothing
    bad = bytearray(encode_frame(10, Opcode.READ, read_payload(BufferSpace.ACT_OUT, 0, 5)))
    bad[-1] ^= 0xFF
    await source.write(bytes(bad))
    seq, op, payload = await receive_frame(sink, parser, 40 * frame_cycles, dut)
    assert (seq, op, payload) == (10, Opcode.READ | RESPONSE_FLAG, bytes([Status.BAD_CRC]))
    assert not parser.buffer and parser.skipped == 0

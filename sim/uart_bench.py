"""cocotb bench: the SoC with its UART PHY against an independent UART model (cocotbext-uart).

cocotbext-uart's UartSource sends an IDENTIFY request and a WRITE/READ round trip bit by bit;
its UartSink decodes the SoC's answers, which must parse as valid frames with the right payload.
"""

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.uart import UartSink, UartSource

from fpga.config import DEFAULT_CONFIG
from fpga.layout import BufferSpace
from fpga.protocol import (
    SYNC,
    Opcode,
    Status,
    crc32,
    encode_frame,
    identify_payload,
    read_payload,
    write_payload,
)


async def receive_frame(sink, cycles_budget, dut):
    data = bytearray()
    for _ in range(cycles_budget // 1000):
        await ClockCycles(dut.clk, 1000)
        data += sink.read_nowait(sink.count())
        if len(data) >= 6:
            length = int.from_bytes(data[2:4], "little")
            if len(data) >= length + 10:
                break
    assert data[:2] == SYNC, data
    length = int.from_bytes(data[2:4], "little")
    body = bytes(data[2 : 6 + length])
    assert int.from_bytes(data[6 + length : 10 + length], "little") == crc32(body)
    return data[4], data[5], bytes(data[6 : 6 + length])


@cocotb.test()
async def uart_round_trip(dut):
    baud = int(os.environ["UART_BAUD"])
    period_ns = 10  # 100 MHz
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    source = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    bit_cycles = 1e9 / baud / period_ns

    await source.write(b"\x00\x13garbage" + encode_frame(7, Opcode.IDENTIFY))
    seq, op, payload = await receive_frame(sink, int(80 * bit_cycles * 20), dut)
    assert (seq, op) == (7, Opcode.IDENTIFY | 0x80)
    assert payload == bytes([Status.OK]) + identify_payload(DEFAULT_CONFIG)

    # a WRITE is acknowledged; a READ of ACT_OUT returns its reset contents (zeros)
    await source.write(encode_frame(8, Opcode.WRITE, write_payload(BufferSpace.ACT_IN, 0, b"xyz")))
    seq, op, payload = await receive_frame(sink, int(40 * bit_cycles * 20), dut)
    assert (seq, op, payload) == (8, Opcode.WRITE | 0x80, bytes([Status.OK]))
    await source.write(encode_frame(9, Opcode.READ, read_payload(BufferSpace.ACT_OUT, 0, 5)))
    seq, op, payload = await receive_frame(sink, int(40 * bit_cycles * 20), dut)
    assert (seq, op, payload) == (9, Opcode.READ | 0x80, bytes([Status.OK]) + bytes(5))

    # a corrupted frame is answered with BAD_CRC and changes nothing
    bad = bytearray(encode_frame(10, Opcode.READ, read_payload(BufferSpace.ACT_OUT, 0, 5)))
    bad[-1] ^= 0xFF
    await source.write(bytes(bad))
    seq, op, payload = await receive_frame(sink, int(40 * bit_cycles * 20), dut)
    assert (seq, op, payload) == (10, Opcode.READ | 0x80, bytes([Status.BAD_CRC]))

"""cocotb bench for hw.engine.engine.ConvEngine: Driver / Monitor / Model / Checker.

The cases (``sim.cases``: buffer images, descriptor, golden expectation from ``fpga.spec.golden``)
come from a JSON file named by ``ENGINE_CASES``; results (mismatches, cycles) go to
``ENGINE_RESULTS``. Inputs are driven and outputs sampled on the falling clock edge.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from fpga.spec.commands import SPACE_BITS
from fpga.spec.layout import BYTE_SPACES, BufferSpace

HOST_PERIOD_NS = 10
ENGINE_PERIOD_NS = 7  # the engine clock: not a multiple of the host's, faster (as on a board)


class BufferPorts:
    """The buffer ports' payloads (``hw.engine.ports``: fields LSB first) as the Verilog ports
    carry them, one vector each; the widths are read off the ports."""

    def __init__(self, dut):
        self.width = (len(dut.read__response__payload) - 8) // 8  # transfer_bytes
        self.addr_bits = len(dut.read__request__payload) - SPACE_BITS
        self.data_at = SPACE_BITS + self.addr_bits
        self.count_at = self.data_at + 8 * self.width

    def chunk(self, space: int, addr: int, data: bytes) -> int:
        value = space | addr << SPACE_BITS | int.from_bytes(data, "little") << self.data_at
        return value | len(data) << self.count_at

    def request(self, space: int, addr: int) -> int:
        return space | addr << SPACE_BITS


class EngineDriver:
    """Puts stimuli in through the buffer write port (chunks of up to the port's width inside
    one aligned block; a byte per cycle into fpga.spec.layout.BYTE_SPACES) and the start pulse."""

    def __init__(self, dut):
        self.dut = dut
        self.ports = BufferPorts(dut)
        self.width = self.ports.width

    async def reset(self):
        dut = self.dut
        for name in ("write__valid", "read__request__valid", "start", "clear_error", "run_flags"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        dut.engine_rst.value = 1
        for _ in range(4):  # both clocks see the reset (the engine's is the faster)
            await FallingEdge(dut.clk)
        dut.rst.value = 0
        dut.engine_rst.value = 0

    async def write(self, space: int, offset: int, data: bytes):
        dut = self.dut
        width = 1 if space in BYTE_SPACES else self.width
        dut.write__valid.value = 1
        done = 0
        while done < len(data):
            at = offset + done
            count = min(width - at % width, len(data) - done)
            dut.write__payload.value = self.ports.chunk(space, at, data[done : done + count])
            await FallingEdge(dut.clk)
            done += count
        dut.write__valid.value = 0

    async def run(self, limit: int) -> tuple[int, int]:
        """Pulse start, wait for done; returns (cycles reported by the engine, error bit)."""
        dut = self.dut
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(limit):
            if dut.done.value == 1:
                break
            await FallingEdge(dut.clk)
        else:
            raise TimeoutError(f"engine not done after {limit} cycles")
        await FallingEdge(dut.clk)
        return dut.cycles.value.to_unsigned(), int(dut.error.value)


class EngineMonitor:
    """Reads the output buffer back (pipelined reads, latency 1)."""

    def __init__(self, dut):
        self.dut = dut
        self.ports = BufferPorts(dut)

    def _byte(self) -> int:
        return self.dut.read__response__payload.value.to_unsigned() & 0xFF  # field ``data``

    async def read(self, space: int, offset: int, length: int) -> bytes:
        dut = self.dut
        out = bytearray()
        for i in range(length + 1):
            if dut.read__response__valid.value == 1:
                out.append(self._byte())
            if i < length:
                dut.read__request__valid.value = 1
                dut.read__request__payload.value = self.ports.request(space, offset + i)
            else:
                dut.read__request__valid.value = 0
            await FallingEdge(dut.clk)
        if dut.read__response__valid.value == 1 and len(out) < length:
            out.append(self._byte())
        return bytes(out[:length])


def check(case: dict, actual: bytes) -> list[int]:
    """Checker: byte offsets where the engine differs from the golden model."""
    expected = bytes.fromhex(case["expected"])
    mask = bytes.fromhex(case["mask"])
    if len(actual) != len(expected):  # a short read is a failure of every byte
        return list(range(len(expected)))
    pairs = zip(actual, expected, mask, strict=True)
    return [i for i, (a, e, m) in enumerate(pairs) if m and a != e]


@cocotb.test()
async def engine_cases(dut):
    cases = json.loads(open(os.environ["ENGINE_CASES"]).read())
    # the engine's own clock domain runs at another frequency than the host side (the buffer
    # ports): every case crosses the clock-domain boundary both ways
    cocotb.start_soon(Clock(dut.clk, HOST_PERIOD_NS, unit="ns").start())
    cocotb.start_soon(Clock(dut.engine_clk, ENGINE_PERIOD_NS, unit="ns").start())
    driver, monitor = EngineDriver(dut), EngineMonitor(dut)
    await driver.reset()
    await FallingEdge(dut.clk)
    results = []
    for case in cases:
        for space, offset, blob in case["writes"]:
            await driver.write(space, offset, bytes.fromhex(blob))
        cycles, error = await driver.run(limit=case["cycles"] * 2 + 100)
        offset, length = case["read"]
        actual = await monitor.read(int(BufferSpace.ACT_OUT), offset, length)
        bad = check(case, actual)
        results.append(
            {
                "label": case["label"],
                "mismatches": len(bad),
                "first_bad": bad[:8],
                "actual": actual.hex() if bad else "",
                "cycles": cycles,
                "predicted": case["cycles"],
                "error": error,
            }
        )
        dut._log.info(
            "%s: %d mismatches, %d cycles (predicted %d)",
            case["label"],
            len(bad),
            cycles,
            case["cycles"],
        )
    with open(os.environ["ENGINE_RESULTS"], "w") as f:
        json.dump(results, f)
    failed = [r for r in results if r["mismatches"] or r["error"]]
    assert not failed, f"{len(failed)} cases differ from fpga.spec.golden: {failed[:3]}"

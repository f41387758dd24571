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

from fpga.spec.layout import BYTE_SPACES, BufferSpace

HOST_PERIOD_NS = 10
ENGINE_PERIOD_NS = 7  # the engine clock: not a multiple of the host's, faster (as on a board)


class EngineDriver:
    """Puts stimuli in through the buffer write port (chunks of up to the port's width inside
    one aligned block; a byte per cycle into fpga.spec.layout.BYTE_SPACES) and the start pulse."""

    def __init__(self, dut):
        self.dut = dut
        self.width = len(dut.write_data) // 8  # fpga.spec.layout.transfer_bytes of the config

    async def reset(self):
        dut = self.dut
        for name in ("write_en", "read_en", "start", "clear_error"):
            getattr(dut, name).value = 0
        dut.write_count.value = 1
        dut.rst.value = 1
        dut.engine_rst.value = 1
        for _ in range(4):  # both clocks see the reset (the engine's is the faster)
            await FallingEdge(dut.clk)
        dut.rst.value = 0
        dut.engine_rst.value = 0

    async def write(self, space: int, offset: int, data: bytes):
        dut = self.dut
        width = 1 if space in BYTE_SPACES else self.width
        dut.write_space.value = space
        dut.write_en.value = 1
        done = 0
        while done < len(data):
            at = offset + done
            count = min(width - at % width, len(data) - done)
            dut.write_addr.value = at
            dut.write_data.value = int.from_bytes(data[done : done + count], "little")
            dut.write_count.value = count
            await FallingEdge(dut.clk)
            done += count
        dut.write_en.value = 0
        dut.write_count.value = 1

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

    async def read(self, space: int, offset: int, length: int) -> bytes:
        dut = self.dut
        out = bytearray()
        dut.read_space.value = space
        for i in range(length + 1):
            if dut.read_valid.value == 1:
                out.append(dut.read_data.value.to_unsigned())
            if i < length:
                dut.read_en.value = 1
                dut.read_addr.value = offset + i
            else:
                dut.read_en.value = 0
            await FallingEdge(dut.clk)
        if dut.read_valid.value == 1 and len(out) < length:
            out.append(dut.read_data.value.to_unsigned())
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

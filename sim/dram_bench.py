"""cocotb bench: the simulated LiteDRAM controller (``litedram_gen --sim``) behind
``hw.soc.dram.LiteDRAMNative`` and ``hw.soc.dma.DMA``, under Verilator.

:class:`DramBenchTop` puts the controller (real refresh, bank machines, crossbar, DFI-level
``SDRAMPHYModel`` with the whole 256 MiB) behind the wrapper, and lets the bench drive its native
port either directly (``use_dma = 0``: the bench is the initiator) or through the DMA
(``use_dma = 1``). :func:`build` exports it, adds the generated core and builds it once (cached
under ``build/sim/verilator/dram_bench-<hash>``).

The cocotb tests (this module is also the cocotb test module) follow Driver / Monitor / Model /
Checker: one loop per clock drives inputs on the falling edge, samples handshakes in ``ReadOnly``
and checks against a Python byte model. Stimuli are random from ``DRAM_SEED``; results go to the
JSON file named by ``DRAM_RESULTS`` (the pytest side prints them).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.soc.dma import DMA
from hw.soc.dram import LiteDRAMNative, NativePortSignature

NAME = "dram_bench"
#: Verilator flags: the C++ of the 15 k-line core compiles 4x faster at -O0 (25 s -> 6 s for its
#: largest file) and the bench runs only ~10 k cycles, so optimizing it would not pay back
BUILD_ARGS = ["-Wno-fatal", "-Wno-MULTIDRIVEN", "-O1", "-CFLAGS", "-O0"]


class DramBenchTop(wiring.Component):
    """Controller + wrapper + DMA; the bench's own native port is muxed in by ``use_dma``."""

    def __init__(self, data_width: int, address_width: int, core_ports: dict):
        self.controller = LiteDRAMNative(data_width, address_width, core_ports=core_ports)
        self.dma = DMA(data_width, address_width)
        dma = self.dma.signature.members
        super().__init__(
            {
                "direct": In(NativePortSignature(data_width, address_width)),
                "use_dma": In(1),
                "read_request": dma["read_request"],
                "read_data": dma["read_data"],
                "write_request": dma["write_request"],
                "write_data": dma["write_data"],
                "read_busy": Out(1),
                "write_busy": Out(1),
                "ready": Out(1),
                "idle": Out(1),
                "protocol_error": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.controller = controller = self.controller
        m.submodules.dma = dma = self.dma
        for name in ("read_request", "write_request", "write_data"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(dma, name))
        wiring.connect(m, dma.read_data, wiring.flipped(self.read_data))
        port, direct, via = controller.port, self.direct, dma.dram
        use = self.use_dma
        # a static bench-only mux (use_dma changes only while both sides are quiet)
        m.d.comb += [
            port.cmd.valid.eq(Mux(use, via.cmd.valid, direct.cmd.valid)),
            port.cmd.payload.eq(Mux(use, via.cmd.payload, direct.cmd.payload)),
            via.cmd.ready.eq(use & port.cmd.ready),
            direct.cmd.ready.eq(~use & port.cmd.ready),
            port.wdata.valid.eq(Mux(use, via.wdata.valid, direct.wdata.valid)),
            port.wdata.payload.eq(Mux(use, via.wdata.payload, direct.wdata.payload)),
            via.wdata.ready.eq(use & port.wdata.ready),
            direct.wdata.ready.eq(~use & port.wdata.ready),
            port.rdata.ready.eq(Mux(use, via.rdata.ready, direct.rdata.ready)),
            via.rdata.valid.eq(use & port.rdata.valid),
            direct.rdata.valid.eq(~use & port.rdata.valid),
            via.rdata.payload.eq(port.rdata.payload),
            direct.rdata.payload.eq(port.rdata.payload),
            self.read_busy.eq(dma.read_busy),
            self.write_busy.eq(dma.write_busy),
            self.ready.eq(controller.ready),
            self.idle.eq(controller.idle),
            self.protocol_error.eq(controller.protocol_error),
        ]
        return m


def build(waves: bool = False):
    """Generate the simulated Arty A7 core, export the bench top, build it with Verilator
    (cached by the hash of both Verilog texts). Returns ``(runner, build_dir, core, seconds)``
    where ``seconds`` are the generation + build seconds spent now (0 when all was cached)."""
    import time

    from cocotb_tools.runner import get_runner

    from fpga.build.litedram import generate
    from sim import runner as sim_runner

    started = time.monotonic()
    core = generate("arty_a7", sim=True)
    top = DramBenchTop(core.port.data_width, core.port.address_width, core.ports)
    source = sim_runner.export_verilog(top, NAME)
    core_text = core.verilog.read_text()
    key = "\0".join([source, core_text, str(waves), " ".join(BUILD_ARGS)])
    key += sim_runner.tool_versions("verilator")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    build_dir = sim_runner.BUILD_ROOT / "verilator" / f"{NAME}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    top_path = build_dir / f"{NAME}.v"
    if not top_path.exists() or top_path.read_text() != source:
        top_path.write_text(source)
    sim_runner.verilator_make_env()
    fresh = not (build_dir / NAME).exists()  # the simulator binary
    runner = get_runner("verilator")
    runner.build(
        sources=[top_path, core.verilog],
        hdl_toplevel=NAME,
        build_dir=build_dir,
        timescale=("1ns", "1ps"),
        build_args=BUILD_ARGS,
        waves=waves,
        always=False,
    )
    seconds = time.monotonic() - started if (fresh or not core.cached) else 0.0
    return runner, build_dir, core, seconds


def run(
    build_result,
    testcase: str,
    results: Path,
    seed: int,
    extra: dict | None = None,
    waves: bool = False,
):
    """Run one cocotb ``testcase`` of this module; returns the results JSON it wrote."""
    from sim import runner as sim_runner

    runner, build_dir, _, _ = build_result
    env = {"PYTHONPATH": str(sim_runner.ROOT), "DRAM_RESULTS": str(results), "DRAM_SEED": str(seed)}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    results.unlink(missing_ok=True)
    try:
        runner.test(
            hdl_toplevel=NAME,
            test_module="sim.dram_bench",
            testcase=testcase,
            build_dir=build_dir,
            test_dir=results.parent,
            extra_env=env,
            waves=waves,
        )
    except Exception as exc:  # a failed cocotb test: its results (if written) say why
        if not results.exists():
            raise AssertionError(f"{testcase}: the bench failed before its checker: {exc}") from exc
    if not results.exists():
        raise AssertionError(f"{testcase}: the bench wrote no results (see {build_dir})")
    return json.loads(results.read_text())


def keep_waveform(testcase: str, results: Path, seed: int, extra: dict | None = None) -> str:
    """Rerun ``testcase`` with ``seed`` on a traced build; keep its VCD under
    ``build/sim/failures/`` and return the path (a failure's evidence)."""
    from sim import runner as sim_runner

    traced = build(waves=True)
    run(traced, testcase, results, seed, extra, waves=True)
    dumps = sorted(results.parent.glob("*.vcd")) + sorted(traced[1].glob("*.vcd"))
    if not dumps:
        return "none written"
    keep = sim_runner.BUILD_ROOT / "failures"
    keep.mkdir(parents=True, exist_ok=True)
    target = keep / f"{NAME}-{testcase}-{seed}.vcd"
    target.write_bytes(dumps[-1].read_bytes())
    return str(target)


# ------------------------------------------------------------------------- cocotb side
try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly
except ImportError:  # imported by pytest for build(); cocotb tests never run then
    cocotb = None


class Packer:
    """Pack/unpack ``data.StructLayout`` payloads as the flat vectors Amaranth exports."""

    def __init__(self, layout):
        self.fields = {name: (field.offset, field.width) for name, field in layout}

    def pack(self, **values) -> int:
        word = 0
        for name, value in values.items():
            offset, width = self.fields[name]
            word |= (value & ((1 << width) - 1)) << offset
        return word

    def unpack(self, word: int) -> dict:
        return {n: (word >> o) & ((1 << w) - 1) for n, (o, w) in self.fields.items()}


def _results_write(payload: dict):
    path = os.environ.get("DRAM_RESULTS")
    if path:
        Path(path).write_text(json.dumps(payload, indent=1))


async def _start(dut):
    """Clock, reset, wait for ``ready``; returns the cycles it took."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("direct__cmd__valid", "direct__wdata__valid", "direct__rdata__ready",
                 "read_request__valid", "write_request__valid", "write_data__valid",
                 "read_data__ready", "use_dma"):  # fmt: skip
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for cycle in range(1000):
        await FallingEdge(dut.clk)
        if dut.ready.value == 1:
            return cycle
    raise TimeoutError("LiteDRAM wrapper not ready after 1000 cycles")


if cocotb is not None:

    @cocotb.test()
    async def native_port_random(dut):
        """Random writes (random byte masks) and reads through the wrapper's streams, with
        random gaps on every producer and random backpressure on read data; every read equals
        the byte model at the time its command was issued."""
        from hw.soc.dram import cmd_layout, rdata_layout, wdata_layout

        seed = int(os.environ.get("DRAM_SEED", "1"))
        count = int(os.environ.get("DRAM_OPS", "600"))
        rng = random.Random(seed)
        word_bytes = 16
        cmd_p = Packer(cmd_layout(24))
        wdata_p = Packer(wdata_layout(128))
        rdata_p = Packer(rdata_layout(128))
        await _start(dut)

        # program: full writes first (so every byte we read is known), then a random mix of
        # masked writes and reads over a small region plus a few far addresses (other rows)
        addresses = [rng.randrange(0, 512) for _ in range(48)] + [
            rng.randrange(0, 1 << 24) for _ in range(16)
        ]
        addresses = sorted(set(addresses))
        ops = [("w", a, rng.randbytes(word_bytes), (1 << word_bytes) - 1) for a in addresses]
        for _ in range(count):
            addr = rng.choice(addresses)
            if rng.random() < 0.5:
                ops.append(("w", addr, rng.randbytes(word_bytes), rng.getrandbits(word_bytes)))
            else:
                ops.append(("r", addr, None, None))

        model = {}
        expected = []  # (addr, bytes) per read, in command order
        wdata_queue = [(d, m) for kind, _, d, m in ops if kind == "w"]
        got = []
        op_index = wdata_index = 0
        cycles = 0
        stall_limit = 200_000
        while (op_index < len(ops) or len(got) < len(expected)) and cycles < stall_limit:
            # drive (falling edge)
            cmd_valid = op_index < len(ops) and rng.random() < 0.8
            if cmd_valid:
                kind, addr, _, _ = ops[op_index]
                dut.direct__cmd__payload.value = cmd_p.pack(we=kind == "w", addr=addr)
            dut.direct__cmd__valid.value = int(cmd_valid)
            wdata_valid = wdata_index < len(wdata_queue) and rng.random() < 0.7
            if wdata_valid:
                data, mask = wdata_queue[wdata_index]
                value = wdata_p.pack(data=int.from_bytes(data, "little"), we=mask)
                dut.direct__wdata__payload.value = value
            dut.direct__wdata__valid.value = int(wdata_valid)
            rdata_ready = rng.random() < 0.6
            dut.direct__rdata__ready.value = int(rdata_ready)
            await ReadOnly()
            # monitor: what the coming rising edge transfers
            if cmd_valid and dut.direct__cmd__ready.value == 1:
                kind, addr, data, mask = ops[op_index]
                old = model.get(addr, bytes(word_bytes))
                if kind == "w":
                    model[addr] = bytes(
                        data[i] if mask >> i & 1 else old[i] for i in range(word_bytes)
                    )
                else:
                    expected.append((addr, old))
                op_index += 1
            if wdata_valid and dut.direct__wdata__ready.value == 1:
                wdata_index += 1
            if rdata_ready and dut.direct__rdata__valid.value == 1:
                word = rdata_p.unpack(dut.direct__rdata__payload.value.to_unsigned())["data"]
                got.append(word.to_bytes(word_bytes, "little"))
            await FallingEdge(dut.clk)
            cycles += 1

        # checker
        mismatches = [
            {"read": i, "addr": a, "expected": e.hex(), "got": g.hex()}
            for i, ((a, e), g) in enumerate(zip(expected, got, strict=False))
            if e != g
        ]
        summary = {
            "seed": seed,
            "ops": len(ops),
            "reads": len(expected),
            "reads_returned": len(got),
            "mismatches": len(mismatches),
            "first_mismatches": mismatches[:5],
            "cycles": cycles,
            "protocol_error": int(dut.protocol_error.value),
        }
        _results_write(summary)
        assert cycles < stall_limit, f"stalled: {summary}"
        assert not mismatches and len(got) == len(expected), summary
        assert summary["protocol_error"] == 0, summary

    @cocotb.test()
    async def dma_random(dut):
        """DMA writer then reader over a few KB: random lengths/alignments, random keep masks
        on written words, random backpressure; reads equal the byte model. Then one long
        read and one long write with no backpressure measure words per cycle."""
        from hw.soc.dma import request_layout, words_layout

        seed = int(os.environ.get("DRAM_SEED", "1"))
        transfers = int(os.environ.get("DRAM_TRANSFERS", "24"))
        rng = random.Random(seed)
        wb = 16
        region = int(os.environ.get("DRAM_REGION", "8192"))  # bytes
        base = rng.randrange(0, 1 << 20) * wb  # somewhere in the 256 MiB
        request_p = Packer(request_layout(28))
        words_p = Packer(words_layout(128))
        await _start(dut)
        dut.use_dma.value = 1
        await FallingEdge(dut.clk)

        memory = bytearray(region)  # model of [base, base + region)
        latency = []  # cycles from a read request to its first word

        async def write(addr, payload: bytes, keeps=None, gap=0.3):
            """One writer transfer; ``keeps[i]`` masks word i further. Returns cycles."""
            first, last = addr // wb, (addr + len(payload) - 1) // wb
            words = []
            for i, w in enumerate(range(first, last + 1)):
                lane = bytearray(wb)
                for b in range(wb):
                    a = w * wb + b
                    if addr <= a < addr + len(payload):
                        lane[b] = payload[a - addr]
                    else:
                        lane[b] = rng.randrange(256)  # outside the range: must not be written
                keep = keeps[i] if keeps else (1 << wb) - 1
                words.append((bytes(lane), keep))
                for b in range(wb):
                    a = w * wb + b
                    if addr <= a < addr + len(payload) and keep >> b & 1:
                        memory[a - base] = lane[b]
            dut.write_request__payload.value = request_p.pack(addr=addr, length=len(payload))
            dut.write_request__valid.value = 1
            await ReadOnly()
            assert dut.write_request__ready.value == 1
            await FallingEdge(dut.clk)
            dut.write_request__valid.value = 0
            index, cycles = 0, 1
            while index < len(words) or dut.write_busy.value == 1 or dut.idle.value == 0:
                valid = index < len(words) and rng.random() >= gap
                if valid:
                    lane, keep = words[index]
                    dut.write_data__payload.value = words_p.pack(
                        data=int.from_bytes(lane, "little"), keep=keep,
                        last=index == len(words) - 1)  # fmt: skip
                dut.write_data__valid.value = int(valid)
                await ReadOnly()
                if valid and dut.write_data__ready.value == 1:
                    index += 1
                await FallingEdge(dut.clk)
                cycles += 1
                assert cycles < 100_000, "DMA write stalled"
            dut.write_data__valid.value = 0
            return cycles, len(words)

        async def read(addr, length, backpressure=0.3):
            """One reader transfer; returns (bytes of the range, keep errors, cycles, words)."""
            dut.read_request__payload.value = request_p.pack(addr=addr, length=length)
            dut.read_request__valid.value = 1
            await ReadOnly()
            assert dut.read_request__ready.value == 1
            await FallingEdge(dut.clk)
            dut.read_request__valid.value = 0
            first, last = addr // wb, (addr + length - 1) // wb
            out, keep_errors, word, cycles = bytearray(), 0, first, 1
            latency.append(None)
            while word <= last:
                ready = rng.random() >= backpressure
                dut.read_data__ready.value = int(ready)
                await ReadOnly()
                if ready and dut.read_data__valid.value == 1:
                    p = words_p.unpack(dut.read_data__payload.value.to_unsigned())
                    lane = p["data"].to_bytes(wb, "little")
                    want = sum(1 << b for b in range(wb) if addr <= word * wb + b < addr + length)
                    keep_errors += (p["keep"] != want) + (p["last"] != (word == last))
                    out += bytes(lane[b] for b in range(wb) if want >> b & 1)
                    word += 1
                    if latency[-1] is None:
                        latency[-1] = cycles
                await FallingEdge(dut.clk)
                cycles += 1
                assert cycles < 100_000, "DMA read stalled"
            dut.read_data__ready.value = 0
            for _ in range(3):  # nothing more may come
                await ReadOnly()
                keep_errors += int(dut.read_data__valid.value)
                await FallingEdge(dut.clk)
            return bytes(out), keep_errors, cycles, last - first + 1

        # driver: initialize the region (aligned, full), then random transfers
        await write(base, rng.randbytes(region))
        mismatches, keep_errors, moved = 0, 0, 0
        for _ in range(transfers):
            length = rng.randrange(1, 700)
            offset = rng.randrange(0, region - length)
            if rng.random() < 0.5:
                keeps = [rng.getrandbits(wb) for _ in range(length // wb + 2)]
                await write(base + offset, rng.randbytes(length), keeps)
            else:
                data, errors, _, _ = await read(base + offset, length)
                keep_errors += errors
                mismatches += data != bytes(memory[offset : offset + length])
            moved += length
        # whole region back: checker over everything written
        data, errors, _, _ = await read(base, region)
        keep_errors += errors
        whole_region_equal = data == bytes(memory)

        # throughput: no backpressure, no gaps, 4 KiB aligned
        long = 4096
        write_cycles, write_words = await write(base, rng.randbytes(long), gap=0.0)
        read_data, errors, read_cycles, read_words = await read(base, long, backpressure=0.0)
        keep_errors += errors
        whole_region_equal &= read_data == bytes(memory[:long])
        summary = {
            "seed": seed,
            "base": base,
            "transfers": transfers,
            "bytes_moved": moved + 2 * region + 2 * long,
            "mismatches": mismatches,
            "keep_errors": keep_errors,
            "whole_region_equal": whole_region_equal,
            "read_words": read_words,
            "read_cycles": read_cycles,
            "read_words_per_cycle": round(read_words / read_cycles, 3),
            "read_latency_cycles": latency[-1],
            "read_latency_range": [min(latency), max(latency)],
            "write_words": write_words,
            "write_cycles": write_cycles,
            "write_words_per_cycle": round(write_words / write_cycles, 3),
            "protocol_error": int(dut.protocol_error.value),
        }
        _results_write(summary)
        assert mismatches == 0 and keep_errors == 0 and whole_region_equal, summary
        assert summary["protocol_error"] == 0, summary

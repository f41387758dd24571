"""A timing top for the conv engine alone: ``fpga.build --design hw.engine_timing:engine_top``.

The SoC's Fmax is set by whichever block is slowest (the link's frame path, today); this top
measures the engine's own critical path. Every engine input is a register of a shift chain fed
from the UART rx pin and every output is registered and folded (XOR) into the tx pin, so no
engine logic is optimised away and no pin path sits between two engine registers. Not a
functional design: timing and fit only.
"""

from __future__ import annotations

from amaranth import Cat, ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib.wiring import In

from hw.engine import ConvEngine


class EngineTimingTop(Elaboratable):
    def __init__(self, config):
        self.config = config
        #: the one clock net (the platform's ``sync``) clocks the engine: report it as ``engine``
        self.clock_domains = {"cd_sync.clk": "engine"}

    def elaborate(self, platform):
        m = Module()
        uart = platform.request("uart", 0)
        m.submodules.engine = engine = ConvEngine(self.config)
        m.domains.engine = ClockDomain("engine")  # the engine on the same clock as its ports
        m.d.comb += [
            ClockSignal("engine").eq(ClockSignal("sync")),
            ResetSignal("engine").eq(ResetSignal("sync")),
        ]
        inputs, outputs = [], []
        for _, member, value in engine.signature.flatten(engine):
            (inputs if member.flow == In else outputs).append(value)
        width = sum(len(value) for value in inputs)
        chain = Signal(width)
        m.d.sync += chain.eq(Cat(uart.rx.i, chain[:-1]))
        m.d.comb += Cat(*inputs).eq(chain)
        observed = Signal(sum(len(value) for value in outputs))
        folded = Signal()
        m.d.sync += [observed.eq(Cat(*outputs)), folded.eq(observed.xor())]
        m.d.comb += uart.tx.o.eq(folded)
        return m


def engine_top(board, config, core=None) -> EngineTimingTop:
    """The engine alone for ``board`` (a ``fpga.boards.Board``) with accelerator ``config``
    (a DRAM ``core`` is not used: build with ``--mode streamed``)."""
    return EngineTimingTop(config)

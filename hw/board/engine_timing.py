"""A timing top for the conv engine alone: ``fpga.build --design
hw.board.engine_timing:engine_top``.

The SoC's Fmax is set by whichever block is slowest; this top measures the engine's own. Every
engine port is a register: the inputs a shift chain fed from the UART rx pin, the outputs
registered and folded (XOR) into the tx pin, so no engine logic is optimised away and no pin
path sits between two engine registers. Not a functional design: timing and fit only.

On a board with an engine clock of its own (the ULX3S: ``Board.engine_clock_mhz``,
``--engine-clock-mhz``) the ``engine`` domain is a PLL output at that clock and the ports
(``sync``) run on the oscillator, so nextpnr reports the ``engine`` domain's Fmax against its
own target, apart from the host side's paths (the buffer writes, the ACT_OUT read byte). On
other boards both domains run on the platform's clock.
"""

from __future__ import annotations

from amaranth import (
    Cat,
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Module,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In

from fpga.spec.layout import fabric_pes
from hw.board.pll import ECP5PLL, Output
from hw.engine.engine import ConvEngine


class EngineTimingTop(Elaboratable):
    def __init__(self, config, engine_mhz: float | None = None, fabric_pes: int = 0):
        self.config, self.engine_mhz, self.fabric_pes = config, engine_mhz, fabric_pes
        #: nextpnr's clock nets by the domain each clocks (``fpga.build.flow`` names results so)
        if engine_mhz is None:
            self.clock_domains = {"cd_sync.clk": "engine"}
        else:
            self.clock_domains = {
                "cd_sync.clk": "sync",
                f"pll.{ECP5PLL.output_name(0)}": "engine",
                "pll.clk_out[0]": "engine",
            }

    def elaborate(self, platform):
        m = Module()
        uart = platform.request("uart", 0)
        m.submodules.engine = engine = ConvEngine(self.config, self.fabric_pes)
        m.domains.engine = ClockDomain("engine")
        if self.engine_mhz is None:  # the engine on the same clock as its ports
            m.d.comb += [
                ClockSignal("engine").eq(ClockSignal("sync")),
                ResetSignal("engine").eq(ResetSignal("sync")),
            ]
        else:
            oscillator_mhz = platform.default_clk_frequency / 1e6
            m.submodules.pll = pll = ECP5PLL(oscillator_mhz, [Output(self.engine_mhz)])
            m.d.comb += [
                pll.clk_in.eq(ClockSignal("sync")),
                ClockSignal("engine").eq(pll.clk_out[0]),
            ]
            m.submodules.engine_reset = ResetSynchronizer(~pll.locked, domain="engine")
        inputs, outputs = [], []
        for _, member, value in engine.signature.flatten(engine):
            if isinstance(Value.cast(value), Const):
                continue  # the constant ready of an always_ready stream
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
    """The engine alone for ``board`` (a ``fpga.spec.boards.Board``) with accelerator ``config``
    (a DRAM ``core`` is not used: build with ``--mode streamed``); its own clock on an ECP5
    board that has one."""
    own = board.engine_clock_mhz if "ecp5" in board.toolchain else None
    return EngineTimingTop(config, own, fabric_pes(config, board.engine_dsps()))

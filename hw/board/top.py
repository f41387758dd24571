"""The top that a board build elaborates: the SoC behind the board's UART pins and DRAM.

``fpga.build.flow`` is handed this design (``--design hw.board.top:board_top``, the default) rather
than importing the gateware, so the build flow depends on the board registry and the toolchains
only.

A board with a ``memory`` entry (``fpga.spec.boards``) gets the **resident SoC** (issue 12): the
link, the Huffman decoder, the sequencer, the DMA, the engine and the board's real LiteDRAM core
(``fpga.build.litedram.generate(board, sim=False)``, which ``fpga.build.flow`` runs) on the board's
DRAM pins. The whole SoC runs in the DRAM controller's user clock, which is the board's fabric clock
(``Board.clock_mhz``):

- **ULX3S** (ECP5, SDR SDRAM, ``GENSDRPHY``): an ``EHXPLLL`` (``hw.board.pll``) makes the fabric
clock
  from the 25 MHz oscillator, and the same frequency shifted by 180 degrees, which an ``ODDRX1F``
  forwards to the SDRAM's clock pin (the generated core has no SDRAM clock output; LiteX's own
  ULX3S target clocks its SDRAM the same way). The core's ``clk`` is the PLL output, its ``rst``
  is "PLL not locked"; the SDR init sequence runs in the core's hardware.

- **Arty A7** (Artix-7, DDR3L, ``A7DDRPHY``): the core's own PLL takes the 100 MHz oscillator (and
  the reset button) and makes the 100 MHz user clock, its 4x DDR clocks and the IDELAYCTRL's
  200 MHz;
  the core's init CPU (SERV) runs LiteDRAM's DDR3 init and write/read leveling from its ROM and sets
  ``init_done``, which the SoC waits for. The pins are LiteX's ``ddram`` resource
  (``hw.board.resources``); the bank's ``INTERNAL_VREF`` is in ``constraints/arty_a7.xdc``.

The engine computes in a clock domain of its own (``engine``, behind ``hw.engine.engine``'s
clock-domain crossing): on the ULX3S a third PLL output at ``Board.engine_clock_mhz``; on the
Arty A7 the fabric clock (no MMCM yet: nothing times a faster clock without Vivado).

A board with an ``ethernet`` entry gets LiteEth's UDP core beside the UART (issue 33;
``fpga.build.liteeth.generate``, which ``fpga.build.flow`` runs unless ``--no-ethernet``): on the
Arty A7 the DP83848's MII pins (amaranth-boards' ``eth_mii``), its 25 MHz reference clock on
``eth_clk25`` (pin G18) from a divide-by-4 of the 100 MHz fabric clock in ``hw.soc.ethernet`` (a
registered output, as the PHY's crystal input takes any clean 25 MHz), and the constraints of
the PHY's two 25 MHz MII clocks, written from the pins' own port names (:func:`mii_constraints`).

A board without ``memory`` (or ``fpga.build --streamed``, which removes it) gets the streamed
SoC (the host sends every layer's activations over the link) at the fabric clock: from the PLL on
the ULX3S, the oscillator on the Arty A7.
"""

from __future__ import annotations

from amaranth import C, ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal
from amaranth.lib import io

from fpga.spec.errors import UserError
from fpga.spec.layout import fabric_pes
from hw.board.pll import ECP5PLL, Output
from hw.board.resources import ARTY_DDR3, ARTY_DDR3_NAME, ddr3_pads
from hw.soc.ethernet import EthernetInterface
from hw.soc.top import ExternalMemory, SoC

#: the ULX3S's ``sdram`` resource subsignal (amaranth-boards' SDRAMResource) behind each port
#: of the generated GENSDRPHY core; the core drives active-low pins itself, so the raw pads
#: (``dir="-"``, no inversion) are connected
SDR_PADS = {
    "sdram_a": "a",
    "sdram_ba": "ba",
    "sdram_cas_n": "cas",
    "sdram_ras_n": "ras",
    "sdram_we_n": "we",
    "sdram_cs_n": "cs",
    "sdram_cke": "clk_en",
    "sdram_dm": "dqm",
    "sdram_dq": "dq",
}


#: the board's MII resource (amaranth-boards) -> the generated LiteEth core's MII ports
MII_RESOURCE = "eth_mii"
MII_PADS = {
    "mii_clocks_tx": "tx_clk",
    "mii_clocks_rx": "rx_clk",
    "mii_rst_n": "rst",
    "mii_tx_en": "tx_en",
    "mii_tx_data": "tx_data",
    "mii_rx_dv": "rx_dv",
    "mii_rx_er": "rx_er",
    "mii_rx_data": "rx_data",
    "mii_col": "col",
    "mii_crs": "crs",
}
#: the PHY's reference clock resource and the fabric-clock division that makes its 25 MHz
REF_CLOCK_RESOURCE, REF_CLOCK_DIVIDE = "eth_clk25", 4
#: the MII clocks' period: 25 MHz at 100 Mbit/s
MII_PERIOD_NS = 40.0


def mii_constraints(ports: dict[str, str]) -> str:
    """XDC for the MII's receive and transmit clocks on the top's own ports (``ports``:
    ``{"rx_clk": port name, "tx_clk": port name}``, the names the platform gave the requested
    pins): 40 ns clocks, asynchronous to every other clock (LiteEth crosses them with its own
    FIFOs)."""
    lines = ["# LiteEth's MII clocks (hw.board.top.mii_constraints)"]
    names = []
    for subsignal in ("rx_clk", "tx_clk"):
        clock = f"eth_{subsignal}"
        lines.append(
            f"create_clock -name {clock} -period {MII_PERIOD_NS} [get_ports {ports[subsignal]}]"
        )
        names.append(clock)
    groups = " ".join(f"-group [get_clocks {name}]" for name in names)
    others = "[get_clocks -filter {NAME !~ eth_*}]"
    lines.append(f"set_clock_groups -asynchronous {groups} -group {others}")
    return "\n".join(lines) + "\n"


class BoardTopError(UserError):
    """The board top cannot be built as asked (the message says why)."""


#: the SDRAM clock's phase against the fabric clock (LiteX's ULX3S target: 180 degrees)
SDRAM_CLOCK_PHASE = 180.0


class BoardTop(Elaboratable):
    """``SoC(config, link="uart")`` wired to the platform's ``uart`` resource 0 and, with a
    generated LiteDRAM ``core`` (``fpga.build.litedram.GeneratedCore``), to the board's DRAM."""

    def __init__(self, board, config, core=None, ethernet=None):
        self.board, self.config, self.core = board, config, core
        #: the generated LiteEth core (``fpga.build.liteeth.EthernetCore``) or None
        self.ethernet = ethernet
        #: the clock nets nextpnr times, by the clock domain each drives (set when elaborated;
        #: ``fpga.build.flow`` names its per-clock results by domain)
        self.clock_domains: dict[str, str] = {}

    def elaborate(self, platform):
        m = Module()
        oscillator_mhz = platform.default_clk_frequency / 1e6
        streamed_xilinx = self.core is None and "ecp5" not in self.board.toolchain
        if streamed_xilinx and self.board.clock_mhz != oscillator_mhz:
            raise BoardTopError(
                f"the streamed {self.board.name} SoC runs at its {oscillator_mhz:g} MHz "
                f"oscillator, not {self.board.clock_mhz:g} MHz"
            )
        uart = platform.request("uart", 0)
        memory = None
        if self.core is not None:
            for path in self.core.files:  # the core's Verilog (and the CPU's, its ROM images)
                platform.add_file(path.name, path.read_bytes())
            if self.board.memory.phy == "GENSDRPHY":
                sdram = platform.request("sdram", 0, dir="-")
                pads = {port: getattr(sdram, name).io for port, name in SDR_PADS.items()}
            else:  # the Arty's A7DDRPHY: LiteX's own DDR3 pin resource (hw.board.resources)
                platform.add_resources(ARTY_DDR3)
                pads = ddr3_pads(platform.request(ARTY_DDR3_NAME, 0, dir="-"), self.core.ports)
                if "uart_rx" in self.core.ports:  # the init CPU's console: idle, not connected
                    pads["uart_rx"] = C(1, 1)
            memory = ExternalMemory.from_core(self.core, pads=pads)
        ethernet = self._ethernet(m, platform) if self.ethernet is not None else None
        engine_clock = self.board.engine_clock_mhz is not None
        m.submodules.soc = soc = SoC(
            self.config,
            link="uart",
            baud=self.board.baud,
            memory=memory,
            engine_clock=engine_clock,
            fabric_pes=fabric_pes(self.config, self.board.engine_dsps()),
            ethernet=ethernet,
        )
        if engine_clock and "ecp5" not in self.board.toolchain:
            raise BoardTopError(f"{self.board.name}: an engine clock of its own needs an ECP5 PLL")
        m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]
        if ethernet is not None:
            m.d.comb += self._reference.o.eq(soc.eth_ref_clk)
        if "ecp5" in self.board.toolchain:
            clock, locked = self._ecp5_pll(
                m, platform, oscillator_mhz, sdram.clk if memory else None, soc
            )
            if memory is not None:  # the SoC's sync is the core's user clock = its clk input
                m.d.comb += [soc.dram_clk_in.eq(clock), soc.dram_rst_in.eq(~locked)]
            else:
                m.domains.sync = ClockDomain("sync")
                m.d.comb += [ClockSignal("sync").eq(clock), ResetSignal("sync").eq(~locked)]
        elif memory is not None:  # the core's PLL takes the oscillator; sync is its user clock
            oscillator = platform.request(platform.default_clk, 0)
            reset = platform.request(platform.default_rst, 0)
            m.d.comb += [soc.dram_clk_in.eq(oscillator.i), soc.dram_rst_in.eq(reset.i)]
        return m

    def _ethernet(self, m, platform) -> EthernetInterface:
        """The LiteEth core's Verilog, the PHY's pins and reference clock, the MII clocks'
        constraints."""
        core = self.ethernet
        if self.board.clock_mhz != 25 * REF_CLOCK_DIVIDE:
            raise BoardTopError(
                f"{self.board.name}: the PHY's 25 MHz reference clock is the fabric clock / "
                f"{REF_CLOCK_DIVIDE}, so Ethernet needs a {25 * REF_CLOCK_DIVIDE} MHz fabric "
                f"clock, not {self.board.clock_mhz:g} MHz (or build with --no-ethernet)"
            )
        platform.add_file(core.verilog.name, core.verilog.read_bytes())
        mii = platform.request(MII_RESOURCE, 0, dir="-")
        clocks = {name: getattr(mii, name).io.name for name in ("rx_clk", "tx_clk")}
        platform.add_file("ethernet.xdc", mii_constraints(clocks))
        pads = {port: getattr(mii, name).io for port, name in MII_PADS.items()}
        reference = platform.request(REF_CLOCK_RESOURCE, 0, dir="-")
        m.submodules.eth_ref_clk = self._reference = io.Buffer("o", reference)
        return EthernetInterface.from_core(core, pads=pads, ref_clock_divide=REF_CLOCK_DIVIDE)

    def _ecp5_pll(self, m, platform, oscillator_mhz, sdram_clk_pad, soc):
        """The ``EHXPLLL``: the fabric clock from the oscillator (returned with the PLL's lock);
        for the SDRAM, its 180-degree copy forwarded by an ``ODDRX1F`` to the clock pin; and
        the engine's own clock (``Board.engine_clock_mhz``) into the SoC's ``engine_clk``."""
        oscillator = platform.request(platform.default_clk, 0)
        mhz = self.board.clock_mhz
        outputs, domains = [Output(mhz)], ["sync"]
        if sdram_clk_pad is not None:
            outputs.append(Output(mhz, SDRAM_CLOCK_PHASE))
            domains.append("sdram_clock")
        if self.board.engine_clock_mhz is not None:
            outputs.append(Output(self.board.engine_clock_mhz))
            domains.append("engine")
        m.submodules.pll = pll = ECP5PLL(oscillator_mhz, outputs)
        # nextpnr names a PLL output's global net after the PLL's pin or after the port it
        # drives (``pll.clkop`` or ``pll.clk_out[0]``, depending on the netlist): both map
        for index, name in enumerate(domains):
            self.clock_domains[f"pll.{pll.output_name(index)}"] = name
            self.clock_domains[f"pll.clk_out[{index}]"] = name
        m.d.comb += pll.clk_in.eq(oscillator.i)
        if self.board.engine_clock_mhz is not None:
            m.d.comb += soc.engine_clk.eq(pll.clk_out[domains.index("engine")])
        if sdram_clk_pad is not None:
            m.domains.sdram_clock = ClockDomain("sdram_clock", reset_less=True)
            m.d.comb += ClockSignal("sdram_clock").eq(pll.clk_out[1])
            m.submodules.sdram_clk = clk = io.DDRBuffer("o", sdram_clk_pad, o_domain="sdram_clock")
            m.d.comb += clk.o.eq(0b01)  # high in the first half of each cycle, low in the second
        return pll.clk_out[0], pll.locked


def board_top(board, config, core=None, ethernet=None) -> BoardTop:
    """The design for ``board`` (a ``fpga.spec.boards.Board``) with accelerator ``config``: resident
    with the board's generated LiteDRAM ``core`` (``fpga.build.flow`` generates it when the board
    has DRAM), streamed without; with the generated LiteEth core ``ethernet`` beside the UART."""
    if (core is None) != (board.memory is None):
        raise ValueError(f"{board.name}: a DRAM core goes with a board memory entry, and only then")
    if ethernet is not None and board.ethernet is None:
        raise ValueError(f"{board.name}: an Ethernet core goes with a board ethernet entry")
    return BoardTop(board, config, core, ethernet)

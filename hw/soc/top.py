"""The SoC top: link PHY -> frame/command decoder (hw.soc.link) -> conv engine (hw.engine.engine).

``SoC(config, link="stream")`` exposes the link as byte streams (rx/tx valid/ready): the
simulated board's C++ harness drives them from a TCP socket, and a PCIe DMA block (e.g. Xilinx
XDMA's AXI-Stream H2C/C2H channels, 8-bit after a width converter) can feed them on hardware.
``SoC(config, link="uart", baud=board.baud)`` puts the UART PHY (hw.soc.uart) in front: ``uart_rx``
/ ``uart_tx`` pins at the board's baud (``fpga.spec.boards``, e.g. the Arty A7's FT2232H at 12 Mbaud
from 100 MHz: the PHY's bit timer is fractional). IDENTIFY reports ``baud`` so that the host can
check it opened the port at the same rate; a stream link has no bit rate and reports 0 unless
``baud`` is given (the tests build a stream SoC that claims to be a UART one).

Writes to ``HUFFMAN_TABLE`` / ``HUFFMAN_STREAM`` go to the on-chip Huffman decoder (hw.soc.huffman),
whose symbols are written into the engine's weight buffer; the writer (the link, or the
sequencer) waits while the decoder's bit buffer is full, and a write to another buffer waits
while a decoded symbol is written.

**Resident mode** (``memory=ExternalMemory(...)``, issue 12): the DRAM controller
(``hw.soc.dram.LiteDRAMNative`` around the generated LiteDRAM core), the DMA (``hw.soc.dma``) and
the sequencer (``hw.soc.sequencer``) join the link. While the sequencer is busy it owns the engine's
buffer ports and ``start`` (the link waits for it: it only starts the sequencer and answers when
it is done); its transfers of :class:`fpga.resident.HostSpace` bytes go to the link's frame
buffer and model checksum instead of the engine. Without ``core_ports`` the SoC exposes the
native port as ``dram`` for a test model of the controller.

**Ethernet** (``ethernet=EthernetInterface(...)``, issue 33): LiteEth's UDP core
(``hw.soc.ethernet``) beside the UART or stream link; its datagrams reach the same frame codec
(``hw.soc.link.udp``) and each response leaves on the link its request came on. Without the
board's pads the SoC exposes the core's MII pins as ``eth_mii_*`` (the simulated board's harness
plays the PHY and the network on them).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Module, Mux, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import HostSpace
from fpga.spec.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.spec.protocol import FRAME_TIMEOUT_CYCLES, clock_hz
from hw.engine.engine import ConvEngine
from hw.soc.arbiter import BufferArbiter
from hw.soc.dma import DMA
from hw.soc.dram import LiteDRAMNative, NativePortSignature
from hw.soc.ethernet import MII_PORTS, EthernetInterface, LiteEthUDP
from hw.soc.link import LinkController
from hw.soc.sequencer import Sequencer, connect_dma


@dataclass(frozen=True, eq=False)
class ExternalMemory:
    """The DRAM of resident mode: the native port's word bits and word-address bits, the bytes
    the programs may address, and the generated core's ports (``fpga.build.litedram.GeneratedCore``:
    the SoC instantiates the core) or ``None`` (the SoC exposes the port as ``dram``).

    ``sim``: the core is ``litedram_gen --sim``'s (clocked by the SoC's ``sync``). A board core
    (``sim=False``) *defines* ``sync`` from its user clock: the SoC then has ``dram_clk_in`` /
    ``dram_rst_in`` inputs (the core's clock input and reset) and ``pads`` (``{core port: IO
    value}``) are the board's DRAM pins."""

    data_width: int
    address_width: int
    size_bytes: int
    core_ports: dict | None = None
    module: str = "litedram_core"
    sim: bool = True
    pads: dict | None = None

    @classmethod
    def from_core(cls, core, pads: dict | None = None) -> ExternalMemory:
        """From a ``fpga.build.litedram.GeneratedCore`` (``generate(board, sim)``); ``pads`` for a
        board core."""
        port = core.port
        return cls(
            port.data_width,
            port.address_width,
            port.size_bytes,
            core.ports,
            core.module,
            sim=core.sim,
            pads=pads,
        )


class SoC(wiring.Component):
    def __init__(
        self,
        config: AcceleratorConfig = DEFAULT_CONFIG,
        link: str = "stream",
        baud: int = 0,
        timeout_cycles: int = FRAME_TIMEOUT_CYCLES,
        memory: ExternalMemory | None = None,
        engine_clock: bool = False,
        fabric_pes: int = 0,
        ethernet: EthernetInterface | None = None,
    ):
        if link not in ("stream", "uart"):
            raise ValueError(f"link must be 'stream' or 'uart', not {link!r}")
        if link == "uart" and baud <= 0:
            raise ValueError("a UART link needs the board's baud (fpga.spec.boards), not 0")
        self.config, self.link, self.baud, self.timeout_cycles = config, link, baud, timeout_cycles
        self.memory = memory
        self.ethernet = ethernet
        #: the engine's clock domain (``engine``): its own clock from the ``engine_clk`` input,
        #: or (False) the SoC's ``sync`` clock; either way it meets the rest through the
        #: engine's clock-domain crossing (``hw.engine.engine``), and its reset is ``sync``'s
        self.engine_clock = engine_clock
        #: the engine's PEs that multiply in fabric (``fpga.spec.layout.fabric_pes``)
        self.fabric_pes = fabric_pes
        if link == "stream":
            ports = {
                "rx_data": In(8),
                "rx_valid": In(1),
                "rx_ready": Out(1),
                "tx_data": Out(8),
                "tx_valid": Out(1),
                "tx_ready": In(1),
            }
        else:
            ports = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        ports["idle"] = Out(1)
        ports["busy"] = Out(1)
        if memory is not None and memory.core_ports is None:
            ports["dram"] = Out(NativePortSignature(memory.data_width, memory.address_width))
        if memory is not None and memory.core_ports is not None and not memory.sim:
            ports["dram_clk_in"] = In(1)
            ports["dram_rst_in"] = In(1)
        if engine_clock:
            ports["engine_clk"] = In(1)
        if ethernet is not None and ethernet.pads is None:
            ports.update({"eth_" + name: flow(width) for name, (flow, width) in MII_PORTS.items()})
        if ethernet is not None and ethernet.ref_clock_divide:
            ports["eth_ref_clk"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        memory = self.memory
        dram_bytes = memory.size_bytes if memory is not None else 0
        m.submodules.engine = engine = ConvEngine(self.config, self.fabric_pes)
        m.domains.engine = ClockDomain("engine", local=True)
        if self.engine_clock:
            m.d.comb += ClockSignal("engine").eq(self.engine_clk)
            m.submodules.engine_reset = ResetSynchronizer(ResetSignal("sync"), domain="engine")
        else:
            m.d.comb += [
                ClockSignal("engine").eq(ClockSignal("sync")),
                ResetSignal("engine").eq(ResetSignal("sync")),
            ]
        ethernet = self.ethernet
        m.submodules.link = link = LinkController(
            self.config,
            self.timeout_cycles,
            self.baud,
            dram_bytes,
            udp_port=ethernet.udp_port if ethernet else 0,
            ethernet_bps=ethernet.rate_bps if ethernet else 0,
        )
        if ethernet is not None:
            m.submodules.ethernet = eth = LiteEthUDP(ethernet)
            wiring.connect(m, eth.received, link.udp_received)
            wiring.connect(m, link.udp_send, eth.send)
            if ethernet.ref_clock_divide:
                m.d.comb += self.eth_ref_clk.eq(eth.ref_clk)
            if ethernet.pads is None:
                for name, (flow, _) in MII_PORTS.items():
                    outer, inner = getattr(self, "eth_" + name), getattr(eth, name)
                    m.d.comb += inner.eq(outer) if flow == In else outer.eq(inner)
        resident = memory is not None
        m.submodules.arbiter = arbiter = BufferArbiter(self.config, resident)
        sequencer = self._resident(m, memory, link, arbiter) if resident else None

        # the buffer ports: the link's (and the sequencer's) through the arbiter to the engine
        wiring.connect(m, link.write, arbiter.link_write)
        wiring.connect(m, link.read, arbiter.link_read)
        wiring.connect(m, arbiter.engine_write, engine.write)
        wiring.connect(m, arbiter.engine_read, engine.read)
        start = link.start if sequencer is None else link.start | sequencer.engine_start
        error = engine.error | arbiter.huffman_error
        # the engine's and the decoder's sticky errors: cleared by the link's CLEAR, and when a
        # program starts (an error of the last one was reported with it, STATUS keeps its code)
        clear = link.clear_error if sequencer is None else link.clear_error | sequencer.start
        m.d.comb += [
            engine.start.eq(start),
            engine.clear_error.eq(clear),
            arbiter.abort.eq(start),  # a run before the Huffman chunk is complete is an error
            arbiter.clear_error.eq(clear),
            link.done.eq(engine.done),
            link.cycles.eq(engine.cycles),
            link.error.eq(error),
        ]
        if sequencer is not None:
            m.d.comb += [
                sequencer.engine_done.eq(engine.done),
                sequencer.engine_error.eq(error),
                # a program's RUN brings its flags (double buffering); the link's runs none
                engine.run_flags.eq(Mux(sequencer.engine_start, sequencer.engine_flags, 0)),
            ]
        busy = engine.busy if sequencer is None else engine.busy | sequencer.busy
        m.d.comb += [
            self.idle.eq(link.idle & ~busy & ~arbiter.huffman_busy),
            self.busy.eq(busy),
        ]
        if self.link == "stream":
            m.d.comb += [
                link.rx.payload.eq(self.rx_data),
                link.rx.valid.eq(self.rx_valid),
                self.rx_ready.eq(link.rx.ready),
                self.tx_data.eq(link.tx.payload),
                self.tx_valid.eq(link.tx.valid),
                link.tx.ready.eq(self.tx_ready),
            ]
        else:
            from hw.soc.uart import UART

            m.submodules.uart = uart = UART(clock_hz(self.config), self.baud)
            m.d.comb += [uart.rx_pin.eq(self.uart_rx), self.uart_tx.eq(uart.tx_pin)]
            wiring.connect(m, link.tx, uart.tx)
            # The UART cannot hold a byte back (its stream is always_ready), so the link's
            # ``rx.ready`` has no one to tell: the link is ready for every byte of a request,
            # and a host sends the next request only after the answer to the last one
            # (docs/protocol.md), so no byte arrives while it is not.
            m.d.comb += [link.rx.payload.eq(uart.rx.payload), link.rx.valid.eq(uart.rx.valid)]
        return m

    def _resident(self, m, memory: ExternalMemory, link: LinkController, arbiter) -> Sequencer:
        """Sequencer + DMA + the DRAM controller (or the ``dram`` port), wired to the link and
        the arbiter (the sequencer owns the buffer ports while it is busy)."""
        host_sizes = {HostSpace.LINK: link.depth, HostSpace.CHECKSUM: memory.size_bytes}
        m.submodules.sequencer = sequencer = Sequencer(
            self.config,
            memory.data_width,
            memory.address_width,
            dram_size=memory.size_bytes,
            host_sizes=host_sizes,
        )
        m.submodules.dma = dma = DMA(memory.data_width, memory.address_width)
        connect_dma(m, sequencer, dma)
        wiring.connect(m, sequencer.write, arbiter.sequencer_write)
        wiring.connect(m, sequencer.read, arbiter.sequencer_read)
        wiring.connect(m, arbiter.host_write, link.host_write)
        wiring.connect(m, arbiter.host_read, link.host_read)
        m.d.comb += arbiter.active.eq(sequencer.busy)
        if memory.core_ports is None:
            wiring.connect(m, dma.dram, wiring.flipped(self.dram))
        else:
            m.submodules.dram = controller = LiteDRAMNative(
                memory.data_width,
                memory.address_width,
                sim=memory.sim,
                core_ports=memory.core_ports,
                pads=memory.pads,
                module=memory.module,
            )
            wiring.connect(m, dma.dram, controller.port)
            m.d.comb += [
                link.dram_ready.eq(controller.ready),
                link.dram_failed.eq(controller.init_error),
            ]
            if not memory.sim:  # the whole SoC runs in the controller's user clock
                m.domains.sync = ClockDomain("sync", local=True)
                m.d.comb += [
                    controller.clk_in.eq(self.dram_clk_in),
                    controller.rst_in.eq(self.dram_rst_in),
                    ClockSignal("sync").eq(controller.user_clk),
                    ResetSignal("sync").eq(controller.user_rst),
                ]
        wiring.connect(m, link.sequencer, sequencer.control)
        return sequencer

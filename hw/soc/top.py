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
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import HostSpace
from fpga.spec.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.spec.layout import HUFFMAN_TABLE_BYTES, BufferSpace
from fpga.spec.protocol import FRAME_TIMEOUT_CYCLES, clock_hz
from hw.engine.engine import ConvEngine
from hw.soc.dma import DMA
from hw.soc.dram import LiteDRAMNative, NativePortSignature
from hw.soc.huffman import HuffmanDecoder
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


ENGINE_OUTPUTS = ("read_valid", "read_data", "busy", "done", "cycles")


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
    ):
        if link not in ("stream", "uart"):
            raise ValueError(f"link must be 'stream' or 'uart', not {link!r}")
        if link == "uart" and baud <= 0:
            raise ValueError("a UART link needs the board's baud (fpga.spec.boards), not 0")
        self.config, self.link, self.baud, self.timeout_cycles = config, link, baud, timeout_cycles
        self.memory = memory
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
        m.submodules.link = link = LinkController(
            self.config, self.timeout_cycles, self.baud, dram_bytes
        )
        m.submodules.huffman = huffman = HuffmanDecoder(in_width=8)
        sequencer = self._resident(m, memory, link) if memory is not None else None

        # the buffer ports' driver: the link, or the sequencer while it is busy (its HostSpace
        # transfers go to the link's frame buffer and checksum instead)
        write_en, write_space = Signal(), Signal.like(link.write_space)
        write_addr, write_data = Signal.like(engine.write_addr), Signal.like(engine.write_data)
        write_count = Signal.like(engine.write_count)  # the link writes bytes (count 1)
        read_en, read_space = Signal(), Signal.like(link.read_space)
        read_addr = Signal.like(link.read_addr)
        start = Signal()
        if sequencer is None:
            m.d.comb += [
                write_en.eq(link.write_en),
                write_space.eq(link.write_space),
                write_addr.eq(link.write_addr),
                write_data.eq(link.write_data),
                write_count.eq(1),
                read_en.eq(link.read_en),
                read_space.eq(link.read_space),
                read_addr.eq(link.read_addr),
                start.eq(link.start),
            ]
        else:
            active = sequencer.busy
            to_host = sequencer.write_space >= min(HostSpace)
            from_host = sequencer.read_space >= min(HostSpace)
            m.d.comb += [
                write_en.eq(Mux(active, sequencer.write_en & ~to_host, link.write_en)),
                write_space.eq(Mux(active, sequencer.write_space, link.write_space)),
                write_addr.eq(Mux(active, sequencer.write_addr, link.write_addr)),
                write_data.eq(Mux(active, sequencer.write_data, link.write_data)),
                write_count.eq(Mux(active, sequencer.write_count, 1)),
                read_en.eq(Mux(active, sequencer.read_en & ~from_host, link.read_en)),
                read_space.eq(Mux(active, sequencer.read_space, link.read_space)),
                read_addr.eq(Mux(active, sequencer.read_addr, link.read_addr)),
                start.eq(link.start | sequencer.engine_start),
                link.host_write_en.eq(active & sequencer.write_en & to_host),
                link.host_write_space.eq(sequencer.write_space),
                link.host_write_addr.eq(sequencer.write_addr),
                link.host_write_data.eq(sequencer.write_data[:8]),
                link.host_read_en.eq(active & sequencer.read_en & from_host),
                link.host_read_addr.eq(sequencer.read_addr),
                sequencer.read_valid.eq(engine.read_valid | link.host_read_valid),
                sequencer.read_data.eq(
                    Mux(link.host_read_valid, link.host_read_data, engine.read_data)
                ),
                sequencer.read_block.eq(engine.read_block),
                sequencer.engine_done.eq(engine.done),
                sequencer.engine_error.eq(engine.error | huffman.error),
            ]
        m.d.comb += [
            engine.read_en.eq(read_en),
            engine.read_space.eq(read_space),
            engine.read_addr.eq(read_addr),
            engine.start.eq(start),
            engine.clear_error.eq(link.clear_error),
        ]
        for name in ENGINE_OUTPUTS:
            m.d.comb += getattr(link, name).eq(getattr(engine, name))

        # weight writes: from the writer, or decoded on chip from a Huffman stream
        to_table = write_space == BufferSpace.HUFFMAN_TABLE
        to_stream = write_space == BufferSpace.HUFFMAN_STREAM
        decoded = huffman.o.valid
        write_ready = Signal()
        m.d.comb += [
            write_ready.eq(Mux(to_stream, huffman.stream_ready, to_table | ~decoded)),
            huffman.table_en.eq(write_en & to_table & (write_addr < HUFFMAN_TABLE_BYTES)),
            huffman.table_addr.eq(write_addr),
            huffman.table_data.eq(write_data[:8]),
            huffman.stream_en.eq(write_en & to_stream),
            huffman.stream_addr.eq(write_addr),
            huffman.stream_data.eq(write_data[:8]),
            huffman.o.ready.eq(1),
            huffman.abort.eq(start),  # a run before the chunk is complete is an error
            huffman.clear_error.eq(link.clear_error),
            link.write_ready.eq(write_ready),
            engine.write_en.eq(decoded | (write_en & ~to_table & ~to_stream)),
            engine.write_space.eq(Mux(decoded, BufferSpace.WEIGHT, write_space)),
            engine.write_addr.eq(Mux(decoded, huffman.o.payload[8:], write_addr)),
            engine.write_data.eq(Mux(decoded, huffman.o.payload[:8], write_data)),
            engine.write_count.eq(Mux(decoded, 1, write_count)),
            link.error.eq(engine.error | huffman.error),
        ]
        busy = Signal()
        m.d.comb += busy.eq(engine.busy)
        if sequencer is not None:
            m.d.comb += [
                sequencer.write_ready.eq(to_host | write_ready),
                busy.eq(engine.busy | sequencer.busy),
            ]
        m.d.comb += [
            self.idle.eq(link.idle & ~busy & ~huffman.busy),
            self.busy.eq(busy),
        ]
        if self.link == "stream":
            m.d.comb += [
                link.rx_data.eq(self.rx_data),
                link.rx_valid.eq(self.rx_valid),
                self.rx_ready.eq(link.rx_ready),
                self.tx_data.eq(link.tx_data),
                self.tx_valid.eq(link.tx_valid),
                link.tx_ready.eq(self.tx_ready),
            ]
        else:
            from hw.soc.uart import UART

            m.submodules.uart = uart = UART(clock_hz(self.config), self.baud)
            m.d.comb += [
                uart.rx_pin.eq(self.uart_rx),
                self.uart_tx.eq(uart.tx_pin),
                link.rx_data.eq(uart.rx_data),
                link.rx_valid.eq(uart.rx_valid),
                uart.tx_data.eq(link.tx_data),
                uart.tx_valid.eq(link.tx_valid),
                link.tx_ready.eq(uart.tx_ready),
            ]
        return m

    def _resident(self, m, memory: ExternalMemory, link: LinkController) -> Sequencer:
        """Sequencer + DMA + the DRAM controller (or the ``dram`` port), wired to the link."""
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
        m.d.comb += [
            sequencer.start.eq(link.seq_start),
            sequencer.program_addr.eq(link.seq_program_addr),
            sequencer.input_base.eq(link.seq_input_base),
            sequencer.output_base.eq(link.seq_output_base),
            sequencer.submit.eq(link.seq_submit),
            sequencer.command.eq(link.seq_command),
            link.seq_submit_taken.eq(sequencer.submit_taken),
            link.seq_submit_done.eq(sequencer.submit_done),
            link.seq_submit_error.eq(sequencer.submit_error),
            link.seq_running.eq(sequencer.running),
            link.seq_host_cycles.eq(sequencer.host_cycles),
            link.seq_done.eq(sequencer.done),
            link.seq_error_code.eq(sequencer.error_code),
            link.seq_pc.eq(sequencer.pc),
            link.seq_cycles.eq(sequencer.cycles),
            link.seq_engine_cycles.eq(sequencer.engine_cycles),
            link.seq_dma_wait_cycles.eq(sequencer.dma_wait_cycles),
        ]
        return sequencer

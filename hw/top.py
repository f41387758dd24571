"""The SoC top: link PHY -> frame/command decoder (hw.link) -> conv engine (hw.engine).

``SoC(config, link="stream")`` exposes the link as byte streams (rx/tx valid/ready): the
simulated board's C++ harness drives them from a TCP socket, and a PCIe DMA block (e.g. Xilinx
XDMA's AXI-Stream H2C/C2H channels, 8-bit after a width converter) can feed them on hardware.
``SoC(config, link="uart", baud=board.baud)`` puts the UART PHY (hw.uart) in front: ``uart_rx`` /
``uart_tx`` pins at the board's baud (``fpga.boards``, e.g. the Arty A7's FT2232H at 12 Mbaud
from 100 MHz: the PHY's bit timer is fractional). IDENTIFY reports ``baud`` so that the host can
check it opened the port at the same rate; a stream link has no bit rate and reports 0 unless
``baud`` is given (the tests build a stream SoC that claims to be a UART one).

Writes to ``HUFFMAN_TABLE`` / ``HUFFMAN_STREAM`` go to the on-chip Huffman decoder (hw.huffman),
whose symbols are written into the engine's weight buffer; the link waits while the decoder's
bit buffer is full, and a link write to another buffer waits while a decoded symbol is written.
"""

from __future__ import annotations

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.layout import HUFFMAN_TABLE_BYTES, BufferSpace
from fpga.protocol import FRAME_TIMEOUT_CYCLES, clock_hz
from hw.engine import ConvEngine
from hw.huffman import HuffmanDecoder
from hw.link import LinkController

ENGINE_PORTS = (
    "read_en",
    "read_space",
    "read_addr",
    "start",
    "clear_error",
)
ENGINE_OUTPUTS = ("read_valid", "read_data", "busy", "done", "cycles")


class SoC(wiring.Component):
    def __init__(
        self,
        config: AcceleratorConfig = DEFAULT_CONFIG,
        link: str = "stream",
        baud: int = 0,
        timeout_cycles: int = FRAME_TIMEOUT_CYCLES,
    ):
        if link not in ("stream", "uart"):
            raise ValueError(f"link must be 'stream' or 'uart', not {link!r}")
        if link == "uart" and baud <= 0:
            raise ValueError("a UART link needs the board's baud (fpga.boards), not 0")
        self.config, self.link, self.baud, self.timeout_cycles = config, link, baud, timeout_cycles
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
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = ConvEngine(self.config)
        m.submodules.link = link = LinkController(self.config, self.timeout_cycles, self.baud)
        for name in ENGINE_PORTS:
            m.d.comb += getattr(engine, name).eq(getattr(link, name))
        for name in ENGINE_OUTPUTS:
            m.d.comb += getattr(link, name).eq(getattr(engine, name))

        # weight writes: from the link, or decoded on chip from a Huffman stream
        m.submodules.huffman = huffman = HuffmanDecoder(in_width=8)
        to_table = link.write_space == BufferSpace.HUFFMAN_TABLE
        to_stream = link.write_space == BufferSpace.HUFFMAN_STREAM
        decoded = huffman.o.valid
        m.d.comb += [
            huffman.table_en.eq(link.write_en & to_table & (link.write_addr < HUFFMAN_TABLE_BYTES)),
            huffman.table_addr.eq(link.write_addr),
            huffman.table_data.eq(link.write_data),
            huffman.stream_en.eq(link.write_en & to_stream),
            huffman.stream_addr.eq(link.write_addr),
            huffman.stream_data.eq(link.write_data),
            huffman.o.ready.eq(1),
            huffman.abort.eq(link.start),  # a run before the chunk is complete is an error
            huffman.clear_error.eq(link.clear_error),
            link.write_ready.eq(Mux(to_stream, huffman.stream_ready, to_table | ~decoded)),
            engine.write_en.eq(decoded | (link.write_en & ~to_table & ~to_stream)),
            engine.write_space.eq(Mux(decoded, BufferSpace.WEIGHT, link.write_space)),
            engine.write_addr.eq(Mux(decoded, huffman.o.payload[8:], link.write_addr)),
            engine.write_data.eq(Mux(decoded, huffman.o.payload[:8], link.write_data)),
            link.error.eq(engine.error | huffman.error),
        ]
        m.d.comb += [
            self.idle.eq(link.idle & ~engine.busy & ~huffman.busy),
            self.busy.eq(engine.busy),
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
            from hw.uart import UART

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

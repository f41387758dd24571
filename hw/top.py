"""The SoC top: link PHY -> frame/command decoder (hw.link) -> conv engine (hw.engine).

``SoC(config, link="stream")`` exposes the link as byte streams (rx/tx valid/ready): the
simulated board's C++ harness drives them from a TCP socket, and a PCIe DMA block (e.g. Xilinx
XDMA's AXI-Stream H2C/C2H channels, 8-bit after a width converter) can feed them on hardware.
``SoC(config, link="uart", baud=...)`` puts the UART PHY (hw.uart) in front: ``uart_rx`` /
``uart_tx`` pins, e.g. the Arty A7's FT2232H at up to 12 Mbaud.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.protocol import FRAME_TIMEOUT_CYCLES
from hw.engine import ConvEngine
from hw.link import LinkController

ENGINE_PORTS = (
    "write_en",
    "write_space",
    "write_addr",
    "write_data",
    "read_en",
    "read_space",
    "read_addr",
    "start",
    "clear_error",
)
ENGINE_OUTPUTS = ("read_valid", "read_data", "busy", "done", "cycles", "error")


class SoC(wiring.Component):
    def __init__(
        self,
        config: AcceleratorConfig = DEFAULT_CONFIG,
        link: str = "stream",
        baud: int = 12_000_000,
        timeout_cycles: int = FRAME_TIMEOUT_CYCLES,
    ):
        if link not in ("stream", "uart"):
            raise ValueError(f"link must be 'stream' or 'uart', not {link!r}")
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
        m.submodules.link = link = LinkController(self.config, self.timeout_cycles)
        for name in ENGINE_PORTS:
            m.d.comb += getattr(engine, name).eq(getattr(link, name))
        for name in ENGINE_OUTPUTS:
            m.d.comb += getattr(link, name).eq(getattr(engine, name))
        m.d.comb += [self.idle.eq(link.idle & ~engine.busy), self.busy.eq(engine.busy)]
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

            clock_hz = int(self.config.clock_mhz * 1e6)
            m.submodules.uart = uart = UART(clock_hz // self.baud)
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

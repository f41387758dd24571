"""The top that a board build elaborates: the SoC behind the board's UART pins.

``fpga.build`` is handed this design (``--design hw.board:board_top``, the default) rather than
importing the gateware, so the build flow depends on the board registry and the toolchains only.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module

from hw.top import SoC


class BoardTop(Elaboratable):
    """``SoC(config, link="uart")`` wired to the platform's ``uart`` resource 0."""

    def __init__(self, board, config):
        self.board, self.config = board, config

    def elaborate(self, platform):
        m = Module()
        uart = platform.request("uart", 0)
        m.submodules.soc = soc = SoC(self.config, link="uart", baud=self.board.baud)
        m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]
        return m


def board_top(board, config) -> BoardTop:
    """The design for ``board`` (a ``fpga.boards.Board``) with accelerator ``config``."""
    return BoardTop(board, config)

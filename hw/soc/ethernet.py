"""LiteEth's UDP core in the SoC: the generated ``liteeth_core`` behind ``Instance``.

``fpga.build.liteeth`` generates the core from the board registry (MII PHY, MAC, IPv4 address, one
raw UDP port ``host``; ARP and ICMP echo inside). :class:`LiteEthUDP` instantiates it in the SoC's
``sync`` clock (its ``sys_clock``; the MII's receive and transmit clocks come from the PHY, and the
core crosses them itself) and gives the link its raw port as two :func:`raw_udp_signature`
streams. The MII pins are the board's (``pads``: ``{core port: IO value}``) or, in simulation,
this component's own ports (:data:`MII_PORTS`), which the simulated board's harness drives
(``sim/board/ethernet.h``). MDIO is left alone: the DP83848 comes up strapped to MII at
100 Mbit/s with auto-negotiation, so the core's management port is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.soc.dram import core_instance
from hw.soc.link.udp import raw_udp_signature

#: the core's MII ports (name -> direction, width) that the SoC exposes when it has no pads
#: (``mii_mdio`` and ``mii_mdc`` are left unconnected, see the module doc)
MII_PORTS = {
    "mii_clocks_rx": (In, 1),
    "mii_clocks_tx": (In, 1),
    "mii_rx_data": (In, 4),
    "mii_rx_dv": (In, 1),
    "mii_rx_er": (In, 1),
    "mii_col": (In, 1),
    "mii_crs": (In, 1),
    "mii_tx_data": (Out, 4),
    "mii_tx_en": (Out, 1),
    "mii_rst_n": (Out, 1),
}
#: the generated core's raw UDP port (``fpga.build.liteeth.PORT_NAME``): into the core (to send)
#: and out of it (received)
SINK, SOURCE = "host_sink_", "host_source_"


@dataclass(frozen=True, eq=False)
class EthernetInterface:
    """The SoC's Ethernet: the generated core (``fpga.build.liteeth.EthernetCore``: its ports
    and module), the board's UDP port, the line rate IDENTIFY reports, and the board's MII pins
    (``pads``, ``{core port: IO value}``; ``None``: the SoC exposes :data:`MII_PORTS`)."""

    core_ports: dict
    udp_port: int
    rate_bps: int
    module: str = "liteeth_core"
    pads: dict | None = None
    #: > 0: the SoC makes the PHY's reference clock, ``sync`` divided by this, on ``ref_clk``
    ref_clock_divide: int = 0

    @classmethod
    def from_core(
        cls, core, pads: dict | None = None, ref_clock_divide: int = 0
    ) -> EthernetInterface:
        """From a generated ``fpga.build.liteeth.EthernetCore``; ``pads`` for a board."""
        from fpga.spec.boards import get_board

        rate = get_board(core.board).ethernet.rate_mbps * 1_000_000
        return cls(core.ports, core.udp_port, rate, core.module, pads, ref_clock_divide)


class LiteEthUDP(wiring.Component):
    """The core; ``received``: datagrams from the network, ``send``: datagrams to it."""

    def __init__(self, interface: EthernetInterface):
        self.interface = interface
        ports = {"received": Out(raw_udp_signature()), "send": In(raw_udp_signature())}
        if interface.pads is None:
            ports.update({name: flow(width) for name, (flow, width) in MII_PORTS.items()})
        if interface.ref_clock_divide:
            ports["ref_clk"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        interface = self.interface
        connections = {"i_sys_clock": ClockSignal("sync"), "i_sys_reset": ResetSignal("sync")}
        for field in raw_udp_signature().members:
            outward = raw_udp_signature().members[field].flow == Out
            # received: the core drives what a producer drives; send: what a consumer drives
            connections[("o_" if outward else "i_") + SOURCE + field] = getattr(
                self.received, field
            )
            connections[("i_" if outward else "o_") + SINK + field] = getattr(self.send, field)
        connections["i_" + SINK + "last_be"] = self.send.last  # one byte a beat: the last is it
        if interface.pads is None:
            for name, (flow, _) in MII_PORTS.items():
                connections[("i_" if flow == In else "o_") + name] = getattr(self, name)
        m.submodules.core = core_instance(
            interface.module, interface.core_ports, connections, interface.pads or {}
        )
        if interface.ref_clock_divide:  # a registered output: a clean clock for the PHY
            divider = Signal(range(interface.ref_clock_divide))
            m.d.sync += divider.eq(divider + 1)
            m.d.comb += self.ref_clk.eq(divider[-1])
        return m

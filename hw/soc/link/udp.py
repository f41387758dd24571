"""The UDP link: LiteEth's raw UDP port as the frame codec's byte streams, and the host's address.

Each datagram carries one frame (``fpga.spec.protocol``: ``UDP_MAX_DATAGRAM``, never split); the
response goes back as one datagram to the address the request came from, at the board's UDP port:
LiteEth's raw port hands the SoC only datagrams addressed to the port its ``sink_dst_port`` names,
so the board listens on and answers to the same port, which the host binds.
:class:`UdpAdapter` sits between the LiteEth core's raw port (:func:`raw_udp_signature`: every
byte of a datagram comes with its sender's IPv4 address and ports, ``fpga.build.liteeth``) and
the link (:class:`hw.soc.link.LinkController`):

- ``rx``: the datagrams' bytes, ``rx_last`` with a datagram's last one (the link drops a frame a
  datagram cut short, the codec's ``abort``); the sender of a datagram is latched with its first
  byte taken, so it stays the one being served until the response has gone.
- ``tx``: the response's bytes, ``tx_length`` of them (the frame's length, known when it
  starts), sent to the latched sender's address as one datagram from and to ``udp_port``.
- The host: the board serves the IPv4 address of the first frame it serves after reset, and of
  every IDENTIFY (``learn``, from the command decoder); ``peer_ok`` says whether the datagram
  being served comes from it. The decoder drops another sender's frames unanswered (an answer
  would put a second entry in LiteEth 2024.12's ARP cache, whose lookup then returns the first
  entry's MAC address for it).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def raw_udp_signature() -> wiring.Signature:
    """A LiteEth raw UDP stream from its producer's side: a datagram's bytes (``last`` on its
    last) with its IPv4 address (the sender's into the SoC, the destination's out of it), ports
    and length, held over the datagram."""
    return wiring.Signature(
        {
            "valid": Out(1),
            "ready": In(1),
            "last": Out(1),
            "data": Out(8),
            "ip_address": Out(32),
            "src_port": Out(16),
            "dst_port": Out(16),
            "length": Out(16),
        }
    )


class UdpAdapter(wiring.Component):
    """Datagrams from (``received``) and to (``send``) LiteEth's raw port as byte streams; see the
    module doc. ``udp_port``: the board's port (the responses' source port)."""

    def __init__(self, udp_port: int):
        self.udp_port = udp_port
        super().__init__(
            {
                "received": In(raw_udp_signature()),
                "send": Out(raw_udp_signature()),
                "rx": Out(stream.Signature(8)),
                "rx_last": Out(1),
                "tx": In(stream.Signature(8)),
                "tx_length": In(16),
                "peer_ok": Out(1),
                "learn": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        received, send = self.received, self.send
        first = Signal(init=1)  # the next byte taken starts a datagram
        sender_ip = Signal(32)
        peer, locked = Signal(32), Signal()
        m.d.comb += [
            self.rx.valid.eq(received.valid),
            self.rx.payload.eq(received.data),
            self.rx_last.eq(received.last),
            received.ready.eq(self.rx.ready),
            self.peer_ok.eq(~locked | (sender_ip == peer)),
        ]
        with m.If(received.valid & received.ready):
            m.d.sync += first.eq(received.last)
            with m.If(first):
                m.d.sync += sender_ip.eq(received.ip_address)
        with m.If(self.learn):
            m.d.sync += [peer.eq(sender_ip), locked.eq(1)]

        # the response's bytes through one register: the core's datagram path starts at
        # flip-flops, not at the end of the link's read of its frame buffer
        sent = Signal(16)  # bytes of the response taken
        full, data, ends = Signal(), Signal(8), Signal()
        m.d.comb += [
            self.tx.ready.eq(~full | send.ready),
            send.valid.eq(full),
            send.data.eq(data),
            send.last.eq(ends),
            send.ip_address.eq(sender_ip),
            send.dst_port.eq(self.udp_port),  # also what the core routes received datagrams by
            send.src_port.eq(self.udp_port),
            send.length.eq(self.tx_length),
        ]
        with m.If(self.tx.valid & self.tx.ready):
            last = sent == self.tx_length - 1
            m.d.sync += [full.eq(1), data.eq(self.tx.payload), ends.eq(last)]
            m.d.sync += sent.eq(Mux(last, 0, sent + 1))
        with m.Elif(send.ready):
            m.d.sync += full.eq(0)
        return m

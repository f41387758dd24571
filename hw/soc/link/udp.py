"""The UDP link: LiteEth's raw UDP port as the frame codec's byte streams, and the host's address.

Each datagram carries one frame (``fpga.spec.protocol``: ``UDP_MAX_DATAGRAM``, never split); the
response goes back as one datagram to the address the request came from, at the board's UDP port:
LiteEth's raw port hands the SoC only datagrams addressed to the port its ``sink_dst_port`` names,
so the board listens on and answers to the same port, which the host binds.
:class:`UdpAdapter` sits between the LiteEth core's raw port (:func:`raw_udp_signature`: every
byte of a datagram comes with its sender's IPv4 address and ports, ``fpga.build.liteeth``) and
the link (:class:`hw.soc.link.LinkController`):

- ``rx``: the datagrams' bytes, ``rx_last`` with a datagram's last one (the link drops a frame a
  datagram cut short, the codec's ``abort``), out of :class:`DatagramBuffer`: LiteEth's receive
  path has no packet buffer and loses bytes of a datagram whenever its ``ready`` is low, so the
  buffer always takes them, each datagram whole if it has room for it (the frames a host sends
  while the link serves the last one; else the datagram is dropped whole, and the host sends it
  again). The sender's address travels with its datagram and is the one being
  served from the datagram's first byte until the next datagram's.
- ``tx``: the response's bytes, ``tx_length`` of them (the frame's length, known when it
  starts), sent to the latched sender's address as one datagram from and to ``udp_port``.
- The host: the board serves the IPv4 address of the first frame it serves after reset, and of
  every IDENTIFY (``learn``, from the command decoder); ``peer_ok`` says whether the datagram
  being served comes from it. The decoder drops another sender's frames unanswered (an answer
  would put a second entry in LiteEth 2024.12's ARP cache, whose lookup then returns the first
  entry's MAC address for it).
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
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


#: the receive buffer's bytes (one RAMB36 as 4096 x 9: a byte and its datagram's ``last``)
BUFFER_BYTES = 4096
#: bytes the buffer keeps for a datagram: its sender's IPv4 address, then its payload
ADDRESS_BYTES = 4


class DatagramBuffer(wiring.Component):
    """Whole datagrams from LiteEth's raw port (``received``, always ready) into a block RAM, and
    out of it (``out``: each datagram's sender address as its first :data:`ADDRESS_BYTES` bytes,
    most significant first, then its payload; ``out.payload`` bit 8 marks the last byte). A
    datagram that finds no room for itself is dropped whole."""

    def __init__(self, depth: int = BUFFER_BYTES):
        self.depth = depth
        super().__init__({"received": In(raw_udp_signature()), "out": Out(stream.Signature(9))})

    def elaborate(self, platform):
        m = Module()
        received = self.received
        m.submodules.memory = memory = Memory(shape=9, depth=self.depth, init=[])
        write, read = memory.write_port(), memory.read_port()
        # byte counts modulo twice the depth: their difference (taken modulo the same) is the
        # fill, 0 .. depth, however often they have wrapped
        wrote, taken = Signal(range(2 * self.depth)), Signal(range(2 * self.depth))
        fill = Signal(range(2 * self.depth))
        m.d.comb += fill.eq(wrote - taken)
        byte = Signal(range(ADDRESS_BYTES))
        m.d.comb += write.addr.eq(wrote)
        with m.If(write.en):
            m.d.sync += wrote.eq(wrote + 1)
        with m.FSM():
            with m.State("IDLE"):
                # room for this one (LiteEth holds a datagram's length and sender over it)
                with m.If(received.valid):
                    with m.If(fill + received.length <= self.depth - ADDRESS_BYTES):
                        m.next = "ADDRESS"
                    with m.Else():
                        m.next = "DROP"
            with m.State("ADDRESS"):  # the sender first (LiteEth's CDC FIFO holds 4 bytes)
                m.d.comb += [
                    write.data.eq(received.ip_address.word_select(~byte, 8)),
                    write.en.eq(1),
                ]
                m.d.sync += byte.eq(byte + 1)
                with m.If(byte == ADDRESS_BYTES - 1):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [
                    received.ready.eq(1),
                    write.data.eq(Cat(received.data, received.last)),
                    write.en.eq(received.valid),
                ]
                with m.If(received.valid & received.last):
                    m.next = "IDLE"
            with m.State("DROP"):
                m.d.comb += received.ready.eq(1)
                with m.If(received.valid & received.last):
                    m.next = "IDLE"
        # out of the block RAM: its read register is the stream's (first word fall-through)
        advance = ~self.out.valid | self.out.ready
        m.d.comb += [read.addr.eq(taken), read.en.eq(advance), self.out.payload.eq(read.data)]
        with m.If(advance):
            m.d.sync += self.out.valid.eq(wrote != taken)
            with m.If(wrote != taken):
                m.d.sync += taken.eq(taken + 1)
        return m


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
                "tx_last": In(1),
                "tx_length": In(16),
                "peer_ok": Out(1),
                "learn": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        send = self.send
        m.submodules.buffer = buffer = DatagramBuffer()
        wiring.connect(m, wiring.flipped(self.received), buffer.received)
        out = buffer.out
        arriving = Signal(32)  # the next datagram's sender, shifted in from its first bytes
        sender_ip = Signal(32)  # the sender of the datagram whose bytes the link takes
        header = Signal(range(ADDRESS_BYTES + 1))  # address bytes taken (from 0 after a last)
        first = Signal(init=1)  # the next payload byte is a datagram's first
        peer, locked = Signal(32), Signal()
        in_address = header != ADDRESS_BYTES
        m.d.comb += [
            self.rx.valid.eq(out.valid & ~in_address),
            self.rx.payload.eq(out.payload[:8]),
            self.rx_last.eq(out.payload[8]),
            out.ready.eq(in_address | self.rx.ready),
            self.peer_ok.eq(~locked | (sender_ip == peer)),
        ]
        with m.If(out.valid & out.ready):
            with m.If(in_address):
                m.d.sync += [arriving.eq(Cat(out.payload[:8], arriving)), header.eq(header + 1)]
            with m.Else():
                m.d.sync += first.eq(out.payload[8])
                with m.If(first):  # the link serves this datagram (its answer goes there)
                    m.d.sync += sender_ip.eq(arriving)
                with m.If(out.payload[8]):
                    m.d.sync += header.eq(0)
        with m.If(self.learn):
            m.d.sync += [peer.eq(sender_ip), locked.eq(1)]

        # the response's bytes through one register: the core's datagram path starts at
        # flip-flops, not at the end of the link's read of its frame buffer; its destination
        # and length are taken with each byte: while the last byte waits here the link may
        # already take the next request (another sender, another length)
        full, data, ends = Signal(), Signal(8), Signal()
        to, length = Signal(32), Signal(16)
        m.d.comb += [
            self.tx.ready.eq(~full | send.ready),
            send.valid.eq(full),
            send.data.eq(data),
            send.last.eq(ends),
            send.ip_address.eq(to),
            send.dst_port.eq(self.udp_port),  # also what the core routes received datagrams by
            send.src_port.eq(self.udp_port),
            send.length.eq(length),
        ]
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [full.eq(1), data.eq(self.tx.payload), ends.eq(self.tx_last)]
            m.d.sync += [to.eq(sender_ip), length.eq(self.tx_length)]
        with m.Elif(send.ready):
            m.d.sync += full.eq(0)
        return m

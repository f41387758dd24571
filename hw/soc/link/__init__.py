"""The link (see fpga.spec.protocol): a frame codec, a command decoder and, in resident mode, the
resident model state, composed by :class:`LinkController`.

- :mod:`hw.soc.link.codec` (``FrameCodec``): byte streams in and out (valid/ready), the sync
  hunt, header, length check, inter-byte timeout, the frame buffer, the CRC-32 of both directions
  (``amaranth.lib.crc``, the catalog's CRC-32/ISO-HDLC = zlib's). A request is buffered whole and
  its CRC checked before it is delivered; it knows no opcodes.
- :mod:`hw.soc.link.decoder` (``CommandDecoder``): opcode dispatch, the engine's side, the
  responses (built in the same buffer, status byte first) and the STATUS counters.
- :mod:`hw.soc.link.model` (``ResidentModel``): the model DRAM holds, the sequencer commands of
  the host's DRAM transfers, a program run's end (the ``sequencer``, ``dram_*``, ``host_*`` ports).
- :mod:`hw.soc.link.udp` (``UdpAdapter``): with Ethernet, LiteEth's raw UDP port as a second
  byte stream into the same codec (a frame per datagram), and the host's address.

The frame header, the request headers and the responses are ``data.View`` s of the layouts in
:mod:`fpga.spec.protocol` (:mod:`hw.soc.link.layouts`), so no byte offset is written twice.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import transfer_bytes
from fpga.spec.protocol import FRAME_OVERHEAD, FRAME_TIMEOUT_CYCLES, LinkKind, frame_bytes
from hw.soc.link.codec import FrameCodec
from hw.soc.link.decoder import (
    RESIDENT_RESPONSES,
    RESPONSES,
    CommandDecoder,
    engine_ports,
)
from hw.soc.link.layouts import FRAME_CRC, REQUEST_BYTES, REQUESTS, struct_layout, view
from hw.soc.link.model import ResidentModel, resident_ports
from hw.soc.link.udp import UdpAdapter, raw_udp_signature

__all__ = [
    "FRAME_CRC",
    "REQUESTS",
    "RESIDENT_RESPONSES",
    "RESPONSES",
    "LinkController",
    "struct_layout",
    "view",
]


def forward(m, outer, inner, names):
    """Connect ``inner``'s ports ``names`` to the same-named ports of ``outer`` (which holds it)."""
    for name in names:
        if inner.signature.members[name].is_signature:  # an interface: the same one, passed on
            wiring.connect(m, getattr(inner, name), wiring.flipped(getattr(outer, name)))
        elif inner.signature.members[name].flow == Out:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))
        else:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))


class LinkController(wiring.Component):
    """``baud`` is only reported by IDENTIFY (the UART bit rate the SoC was built for, 0 for a
    byte-stream link); the PHY in front of this controller is the SoC's business.

    ``dram_bytes`` > 0 adds resident mode (``fpga.spec.protocol``'s MEM_WRITE, MEM_READ,
    MODEL_COMMIT, RUN_RESIDENT; IDENTIFY reports the size): the controller hands the sequencer
    (``hw.soc.sequencer``) one LOAD/STORE per DRAM transfer, with the frame buffer as the
    :class:`fpga.resident.HostSpace` ``LINK`` (``host_*`` ports: the sequencer's buffer port
    when it addresses that space) and ``CHECKSUM`` (a CRC-32 over a model read back), starts
    programs, and keeps the model state that STATUS reports. A MEM_WRITE that starts below the
    committed model's end forgets the model first, so a half-written model never runs. Until the
    DRAM controller is initialized (``dram_ready``; ``dram_failed``: its calibration failed) the
    resident opcodes answer DRAM_NOT_READY at once instead of waiting on the DRAM, and STATUS
    reports ``dram_state``.

    ``udp_port`` (with ``ethernet_bps``, the line rate IDENTIFY reports) adds the UDP link: the
    raw port of LiteEth's core (``udp_received`` / ``udp_send``, :mod:`hw.soc.link.udp`) feeds the
    same codec. The codec serves one link at a time: while it hunts for a sync it takes bytes
    from a datagram whenever one is there (the whole datagram, then it looks again), else from
    ``rx``; from a frame's first byte to the end of its response it stays with that link, whose
    bytes the other link's host sends meanwhile are not taken (a UART's are lost, its host
    retries). The response goes out on the link the request came on."""

    def __init__(
        self,
        config: AcceleratorConfig,
        timeout_cycles: int = FRAME_TIMEOUT_CYCLES,
        baud: int = 0,
        dram_bytes: int = 0,
        udp_port: int = 0,
        ethernet_bps: int = 0,
    ):
        self.config = config
        self.timeout_cycles = timeout_cycles
        self.baud = baud
        self.dram_bytes = dram_bytes
        self.depth = frame_bytes(config)
        self.udp_port = udp_port
        #: the line rate of each link (IDENTIFY): the byte-stream one first
        self.links = {LinkKind.UART if baud else LinkKind.STREAM: baud}
        if udp_port:
            self.links[LinkKind.ETHERNET] = ethernet_bps
        resident = resident_ports(config) if dram_bytes else {}
        udp = {}
        if udp_port:
            udp = {"udp_received": In(raw_udp_signature()), "udp_send": Out(raw_udp_signature())}
        super().__init__(
            {
                **resident,
                # the PHY's bytes (a byte stream, or the UART's)
                "rx": In(stream.Signature(8)),
                "tx": Out(stream.Signature(8)),
                **udp,
                "idle": Out(1),
                # engine side (see hw.engine.engine.ConvEngine)
                **engine_ports(config),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.codec = codec = FrameCodec(
            self.depth,
            cfg.max_payload,
            REQUEST_BYTES,
            self.timeout_cycles,
            transfer_bytes(cfg),  # the sequencer reads HostSpace.LINK a block a cycle
        )
        m.submodules.decoder = decoder = CommandDecoder(
            cfg, self.depth, self.baud, self.dram_bytes, self.links
        )
        wiring.connect(m, codec.frames, decoder.frames)
        if self.udp_port:
            self._select_link(m, codec, decoder)
        else:
            wiring.connect(m, wiring.flipped(self.rx), codec.i)
            wiring.connect(m, codec.o, wiring.flipped(self.tx))
        m.d.comb += self.idle.eq(codec.idle)
        forward(m, self, decoder, engine_ports(cfg))
        if self.dram_bytes:
            m.submodules.model = model = ResidentModel(cfg, self.depth)
            wiring.connect(m, decoder.model, model.control)
            forward(m, self, model, resident_ports(cfg))
        return m

    def _select_link(self, m, codec: FrameCodec, decoder: CommandDecoder) -> None:
        """The codec's bytes from and to ``rx``/``tx`` or the UDP adapter (see the class doc)."""
        m.submodules.udp = udp = UdpAdapter(self.udp_port)
        wiring.connect(m, wiring.flipped(self.udp_received), udp.received)
        wiring.connect(m, udp.send, wiring.flipped(self.udp_send))
        held = Signal()  # the link chosen last cycle: a frame's, until its response has gone
        inside = Signal()  # some of a datagram's bytes taken, not its last
        ended = Signal()  # a datagram's last byte was taken last cycle
        use_udp = Signal()
        m.d.comb += use_udp.eq(Mux(codec.idle & ~inside, udp.rx.valid, held))
        m.d.sync += held.eq(use_udp)
        take_udp = use_udp & ~ended  # a cycle between datagrams: the codec may have to drop one
        m.d.comb += [
            codec.i.payload.eq(Mux(use_udp, udp.rx.payload, self.rx.payload)),
            codec.i.valid.eq(Mux(use_udp, udp.rx.valid & ~ended, self.rx.valid)),
            udp.rx.ready.eq(take_udp & codec.i.ready),
            self.rx.ready.eq(~use_udp & codec.i.ready),
            # a datagram that ended inside a frame: the frame is dropped, the next is whole
            codec.abort.eq(ended),
            decoder.link.eq(Mux(held, LinkKind.ETHERNET, next(iter(self.links)))),
            decoder.peer_ok.eq(udp.peer_ok),
            udp.learn.eq(decoder.learn),
            # the response, on the link the request came on
            udp.tx.payload.eq(codec.o.payload),
            udp.tx.valid.eq(codec.o.valid & held),
            self.tx.payload.eq(codec.o.payload),
            self.tx.valid.eq(codec.o.valid & ~held),
            codec.o.ready.eq(Mux(held, udp.tx.ready, self.tx.ready)),
            udp.tx_last.eq(codec.o_last),
            udp.tx_length.eq(FRAME_OVERHEAD + codec.frames.header.length),
        ]
        taken = udp.rx.valid & udp.rx.ready
        m.d.sync += ended.eq(taken & udp.rx_last)
        with m.If(taken):
            m.d.sync += inside.eq(~udp.rx_last)

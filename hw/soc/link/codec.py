"""The link's frame codec: frames in and out of a byte stream, knowing no opcodes.

Receive: hunt for the sync bytes, take the header (a length above ``max_payload`` is a framing
error), the payload into the frame buffer (from address 0; the first ``head_bytes`` also into a
register) and the CRC-32 trailer, which goes through the CRC too (a residue check), with an
inter-byte timeout inside a frame. The frame is then delivered to a command decoder, which owns
the buffer until it sends the response; the codec sends sync, the response header, the response
payload (from address 0 of the buffer) and its CRC. This is the part of the link that another
transport (e.g. UDP) would reuse.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.protocol import CRC_TRAILER, FRAME_HEADER, SYNC
from hw.soc.link.layouts import FRAME_CRC, HEADER, frame_buffer_port


def frame_signature(depth: int, head_bytes: int, block_bytes: int = 1) -> wiring.Signature:
    """The codec's side of its connection to a command decoder (``Out``: the codec drives it).

    A received frame is delivered for one cycle (``valid``): ``crc_ok`` (its CRC-32 matched),
    ``header`` and ``head`` (its header and first ``head_bytes`` payload bytes, held until the next
    frame's header arrives), its payload in the buffer from address 0. From then the decoder owns
    the buffer (``wr_*``: a write port; ``rd_addr`` / ``rd_data``: a read port that answers in the
    cycle after the address, a block RAM's)
    until it has sent the response: ``send`` (in the delivery's cycle or later) with
    ``send_header``, the response payload in the buffer from address 0 by the cycle after
    ``send`` (the buffer is still the decoder's in that cycle). The codec then holds the
    response's header in ``header``. ``timeout`` (inside a frame, no byte for the timeout) and
    ``framing_error`` (a length above the maximum payload, or ``abort``): the frame is dropped,
    in that cycle. ``discard`` (instead of ``send``): the decoder drops the frame unanswered.
    """
    return wiring.Signature(
        {
            "valid": Out(1),
            "crc_ok": Out(1),
            "header": Out(HEADER),
            "head": Out(8 * head_bytes),
            "timeout": Out(1),
            "framing_error": Out(1),
            "send": In(1),
            "send_header": In(HEADER),
            "discard": In(1),
            **frame_buffer_port(depth, block_bytes),
        }
    )


class FrameCodec(wiring.Component):
    """Bytes in (``i``) and out (``o``) as byte streams; frames to and from a command decoder
    (``frames``, see :func:`frame_signature`) through a ``depth``-byte frame buffer. ``idle``:
    hunting for a frame's sync (nothing received or to send). The buffer is ``block_bytes`` wide
    (a power of two): bytes are written one at a time, read alone or as their aligned block."""

    def __init__(
        self,
        depth: int,
        max_payload: int,
        head_bytes: int,
        timeout_cycles: int,
        block_bytes: int = 1,
    ):
        if block_bytes & (block_bytes - 1):
            raise ValueError(f"block_bytes {block_bytes} is not a power of two")
        self.depth = depth
        self.block_bytes = block_bytes
        self.max_payload = max_payload
        self.head_bytes = head_bytes
        self.timeout_cycles = timeout_cycles
        super().__init__(
            {
                "i": In(stream.Signature(8)),
                "o": Out(stream.Signature(8)),
                # the byte stream's unit of delivery ended mid-frame (a UDP datagram, see
                # hw.soc.link.udp): the frame is dropped as a framing error
                "abort": In(1),
                "o_last": Out(1),  # with ``o``: the frame's last byte
                "idle": Out(1),
                "frames": Out(frame_signature(depth, head_bytes, block_bytes)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        frames = self.frames
        header = frames.header  # the request's, then (from send) the response's
        width = self.block_bytes
        lane_bits = (width - 1).bit_length()
        words = -(-self.depth // width)
        # the codec's own byte view of the buffer: wr (addr, data, en), rd (addr -> data)
        wr = Signal(data.StructLayout({"addr": range(self.depth), "data": 8, "en": 1}))
        rd = Signal(data.StructLayout({"addr": range(self.depth), "data": 8}))
        # a block RAM: its reads answer the cycle after the address (the ``rd`` view's
        # ``data`` is the byte of the address given in the cycle before)
        m.submodules.frame = frame = Memory(shape=8 * width, depth=words, init=[])
        port = frame.write_port(granularity=8)
        read = frame.read_port()
        lane = Signal(max(lane_bits, 1))  # the byte's place in the block read
        m.d.sync += lane.eq(rd.addr[:lane_bits] if lane_bits else 0)
        m.d.comb += [
            port.addr.eq(wr.addr >> lane_bits),
            port.data.eq(Cat(*[wr.data] * width)),
            port.en.eq(Mux(wr.en, 1 << wr.addr[:lane_bits], 0)),
            read.addr.eq(rd.addr >> lane_bits),
            rd.data.eq(read.data.word_select(lane[:lane_bits], 8) if lane_bits else read.data),
            frames.rd_block.eq(read.data),
        ]
        m.submodules.crc = frame_crc = FRAME_CRC.create()
        # the buffer is the decoder's except while a payload comes in or a response goes out
        m.d.comb += [
            wr.addr.eq(frames.wr_addr),
            wr.data.eq(frames.wr_data),
            wr.en.eq(frames.wr_en),
            rd.addr.eq(frames.rd_addr),
            frames.rd_data.eq(rd.data),
            frames.crc_ok.eq(frame_crc.match_detected),
        ]

        byte_in = self.i.payload
        rx_fire = Signal()
        m.d.comb += rx_fire.eq(self.i.valid & self.i.ready)
        index = Signal(16)

        # -- inter-byte timeout while inside a frame ---------------------------------------------
        in_frame = Signal()
        timer = Signal(range(self.timeout_cycles + 1))
        with m.If(rx_fire | ~in_frame):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self.timeout_cycles):
            m.d.sync += timer.eq(timer + 1)
        m.d.comb += frames.timeout.eq(in_frame & (timer == self.timeout_cycles))

        with m.FSM() as fsm:
            with m.State("SYNC0"):
                with m.If(rx_fire & (byte_in == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                self._receive(m, frame_crc, rx_fire, checked=False)
                m.d.comb += frame_crc.start.eq(1)  # the CRC covers what follows the sync
                with m.If(rx_fire):
                    with m.If(byte_in == SYNC[1]):
                        m.d.sync += index.eq(0)
                        m.next = "HEADER"
                    with m.Elif(byte_in != SYNC[0]):
                        m.next = "SYNC0"
            with m.State("HEADER"):
                self._receive(m, frame_crc, rx_fire)
                with m.If(rx_fire):
                    m.d.sync += [
                        header.as_value().word_select(index[:2], 8).eq(byte_in),
                        index.eq(index + 1),
                    ]
                    with m.If(index == FRAME_HEADER.size - 1):  # length is in, opcode arrives
                        m.d.sync += index.eq(0)
                        with m.If(header.length > self.max_payload):
                            m.d.comb += frames.framing_error.eq(1)
                            m.next = "SYNC0"
                        with m.Elif(header.length == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                self._receive(m, frame_crc, rx_fire)
                m.d.comb += [wr.addr.eq(index), wr.data.eq(byte_in), wr.en.eq(rx_fire)]
                with m.If(rx_fire):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index < self.head_bytes):
                        m.d.sync += frames.head.word_select(index, 8).eq(byte_in)
                    with m.If(index == header.length - 1):
                        m.d.sync += index.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                # the received CRC goes through the CRC too: a residue check
                self._receive(m, frame_crc, rx_fire)
                with m.If(rx_fire):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == CRC_TRAILER.size - 1):
                        m.next = "DELIVER"
            with m.State("DELIVER"):
                m.d.comb += frames.valid.eq(1)
                m.next = "SERVE"
                self._take_response(m)
            with m.State("SERVE"):  # the decoder executes the request
                self._take_response(m)
            with m.State("RESPOND"):  # the decoder writes the response's first byte
                m.d.comb += frame_crc.start.eq(1)
                m.next = "TX"
            with m.State("TX"):
                self._transmit(m, header, rd, frame_crc)

        m.d.comb += [
            in_frame.eq(Cat(fsm.ongoing(s) for s in ("SYNC1", "HEADER", "PAYLOAD", "CRC")).any()),
            self.i.ready.eq(in_frame | fsm.ongoing("SYNC0")),
            self.idle.eq(fsm.ongoing("SYNC0")),
        ]
        return m

    def _receive(self, m, frame_crc, rx_fire, checked=True):
        """A state inside a frame: the byte (taken on ``rx_fire``) goes into ``frame_crc`` if
        ``checked``; on an inter-byte timeout, hunt for the next sync."""
        if checked:
            m.d.comb += [frame_crc.data.eq(self.i.payload), frame_crc.valid.eq(rx_fire)]
        with m.If(self.frames.timeout):
            m.next = "SYNC0"
        with m.Elif(self.abort):
            m.d.comb += self.frames.framing_error.eq(1)
            m.next = "SYNC0"

    def _take_response(self, m):
        """On ``send``: the response's header replaces the request's."""
        with m.If(self.frames.send):
            m.d.sync += self.frames.header.eq(self.frames.send_header)
            m.next = "RESPOND"
        with m.Elif(self.frames.discard):
            m.next = "SYNC0"

    def _transmit(self, m, header, rd, frame_crc):
        """TX: sync, ``header``, the payload (``header.length`` bytes from the buffer read port
        ``rd``) and the CRC that ``frame_crc`` computes over header and payload."""
        index = Signal(16)
        prefix = Cat(Const(int.from_bytes(SYNC, "little"), 8 * len(SYNC)), header)
        prefix_size = len(prefix) // 8
        payload_end = header.length + prefix_size
        byte = Signal(8)
        # the address of the byte sent next cycle (the buffer answers a cycle later)
        m.d.comb += rd.addr.eq(Mux(self.o.ready, index + 1, index) - prefix_size)
        with m.If(index < prefix_size):
            m.d.comb += byte.eq(prefix.word_select(index[:3], 8))
        with m.Elif(index < payload_end):
            m.d.comb += byte.eq(rd.data)
        with m.Else():
            crc_index = (index - payload_end)[:2]
            m.d.comb += byte.eq(frame_crc.crc.word_select(crc_index, 8))
        last = index == payload_end + CRC_TRAILER.size - 1
        m.d.comb += [self.o.payload.eq(byte), self.o.valid.eq(1), frame_crc.data.eq(byte)]
        m.d.comb += self.o_last.eq(last)
        with m.If(self.o.ready):
            m.d.sync += index.eq(index + 1)
            with m.If((index >= len(SYNC)) & (index < payload_end)):
                m.d.comb += frame_crc.valid.eq(1)
            with m.If(last):
                m.d.sync += index.eq(0)
                m.next = "SYNC0"

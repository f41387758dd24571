"""DMA between DRAM (LiteDRAM native-port words) and on-chip streams, in bursts.

A transfer is a byte range ``[addr, addr + length)`` of DRAM (byte addresses, any alignment,
``length >= 1``; a request with ``length == 0`` is accepted and moves nothing). On-chip data is
*lane-aligned words*: one ``data_width``-bit word per DRAM word the range touches, byte ``a`` of
DRAM in lane ``a % word_bytes``, with ``keep`` marking the bytes inside the range (only the
first and the last word of a transfer can be partial) and ``last`` on the final word. A reader's
output can therefore feed a writer's input at the same alignment unchanged.

- :class:`DMAReader`: request -> read commands for every word of the range, issued back to back
  while the read buffer of ``hw.soc.dram.LiteDRAMNative`` has room (``in_flight`` commands, by
  default its whole depth: 32) -> ``data`` stream. Throughput: one word per cycle when the
  controller accepts a command per cycle and the consumer is ready; latency from request to the
  first word = the controller's read latency (~20 cycles on the simulated DDR3) + 2.
- :class:`DMAWriter`: request + ``data`` stream -> write data into the wrapper's write buffer and
  one write command per word, each issued only after its data word is buffered (so the command
  never waits inside the wrapper, and cannot block a reader sharing the port). ``we`` = the range
  mask AND ``keep``. ``busy`` falls when every word has been handed to the wrapper; the wrapper's
  ``idle`` says the controller has taken it all (wait for it before reading the range back
  through another port).
- :class:`DMA`: one reader and one writer sharing one native port through a round-robin command
  arbiter (reads and writes interleave per command; read data and write data have their own
  ordered streams, so no routing is needed). Ordering *between* a read and a write to the same
  range is the sequencer's job: start the read after the writer's ``busy`` falls.

The writer takes a request when idle (``request.ready`` while idle). The reader is pipelined:
it takes the next request as soon as the one before has issued all its read commands, while that
one's words are still coming back; each taken request's framing (its last word's index and
first/last masks) waits in a small queue (``queue_depth``, :data:`REQUEST_QUEUE_DEPTH`) so
``keep`` and ``last`` stay per request. Back-to-back short reads (a LOAD's rows) then share one
controller latency instead of paying one each; ``busy`` stays high until the last word of the
last request has been passed on.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.soc.dram import (
    READ_BUFFER_DEPTH,
    NativePortSignature,
    cmd_layout,
    rdata_layout,
    wdata_layout,
)

#: read requests a :class:`DMAReader` holds whose words have not all come back (each one's word
#: count and first/last masks): rows in flight at once
REQUEST_QUEUE_DEPTH = 8


def request_layout(byte_address_width: int) -> data.StructLayout:
    """``addr``: byte address; ``length``: bytes (up to the whole memory)."""
    return data.StructLayout({"addr": byte_address_width, "length": byte_address_width + 1})


def words_layout(data_width: int) -> data.StructLayout:
    """A lane-aligned word of a transfer: ``keep`` = bytes inside the range, ``last``."""
    return data.StructLayout({"data": data_width, "keep": data_width // 8, "last": 1})


class _Range:
    """Word count and first/last byte masks of a byte range (combinational)."""

    def __init__(self, m, addr, length, word_bytes: int, count_width: int):
        shift = (word_bytes - 1).bit_length()
        ones = Const((1 << word_bytes) - 1, word_bytes)
        end = Signal.like(addr, name="range_end")  # last byte
        m.d.comb += end.eq(addr + length - 1)
        self.first_word = addr[shift:]
        self.count = Signal(count_width, name="range_words")
        m.d.comb += self.count.eq(end[shift:] - addr[shift:] + 1)
        self.first_mask = Signal(word_bytes, name="first_mask")
        self.last_mask = Signal(word_bytes, name="last_mask")
        m.d.comb += [
            self.first_mask.eq((ones << addr[:shift])[:word_bytes]),
            self.last_mask.eq(ones >> ~end[:shift]),  # ~x = word_bytes - 1 - x
        ]


class _Geometry:
    def __init__(self, data_width: int, address_width: int):
        if data_width % 8 or (data_width // 8) & (data_width // 8 - 1):
            raise ValueError(f"DMA word of {data_width} bits: need a power-of-two byte count")
        self.data_width = data_width
        self.address_width = address_width
        self.word_bytes = data_width // 8
        self.byte_address_width = address_width + (self.word_bytes - 1).bit_length()


class DMAReader(wiring.Component):
    """DRAM byte range -> lane-aligned word stream (see the module docstring).

    Ports: ``request`` In(addr, length), ``data`` Out(data, keep, last), ``cmd`` Out and
    ``rdata`` In (the native port's read half), ``busy``. A request is taken while the previous
    one's words still come back (up to ``queue_depth`` requests, ``in_flight`` words).
    """

    def __init__(self, data_width: int, address_width: int, in_flight: int = READ_BUFFER_DEPTH,
                 queue_depth: int = REQUEST_QUEUE_DEPTH):  # fmt: skip
        self.geometry = g = _Geometry(data_width, address_width)
        self.in_flight, self.queue_depth = in_flight, queue_depth
        super().__init__(
            {
                "request": In(stream.Signature(request_layout(g.byte_address_width))),
                "data": Out(stream.Signature(words_layout(data_width))),
                "cmd": Out(stream.Signature(cmd_layout(address_width))),
                "rdata": In(stream.Signature(rdata_layout(data_width))),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        count_width = g.address_width + 1
        span = _Range(m, self.request.payload.addr, self.request.payload.length, g.word_bytes,
                      count_width)  # fmt: skip

        issue_addr = Signal(g.address_width)
        issue_left = Signal(count_width)  # read commands still to issue
        outstanding = Signal(range(self.in_flight + 1))  # issued, not yet passed on
        # the requests whose commands are issued (or being issued) but whose words have not all
        # come back: each one's last word index and first/last masks, in order
        framing = data.StructLayout(
            {"last_word": count_width, "first_mask": g.word_bytes, "last_mask": g.word_bytes}
        )
        m.submodules.queue = queue = SyncFIFO(width=framing.size, depth=self.queue_depth)
        head = data.View(framing, queue.r_data)
        received = Signal(count_width)  # words of the head request passed on so far

        # a request is taken once the one before has issued all its commands
        taking = Signal()
        m.d.comb += [
            self.request.ready.eq((issue_left == 0) & queue.w_rdy),
            taking.eq(self.request.valid & self.request.ready & (self.request.payload.length != 0)),
            self.busy.eq((issue_left != 0) | (queue.w_level != 0)),
            queue.w_en.eq(taking),
        ]
        entry = data.View(framing, Signal(framing.size, name="entry"))
        m.d.comb += [
            entry.last_word.eq(span.count - 1),
            entry.first_mask.eq(span.first_mask),
            entry.last_mask.eq(span.last_mask),
            queue.w_data.eq(entry.as_value()),
        ]
        with m.If(taking):
            m.d.sync += [issue_addr.eq(span.first_word), issue_left.eq(span.count)]

        # command issuer: back to back while the wrapper's read buffer has room for the word
        m.d.comb += [
            self.cmd.valid.eq((issue_left != 0) & (outstanding != self.in_flight)),
            self.cmd.payload.addr.eq(issue_addr),
            self.cmd.payload.we.eq(0),
        ]
        issued = self.cmd.valid & self.cmd.ready
        with m.If(issued):
            m.d.sync += [issue_addr.eq(issue_addr + 1), issue_left.eq(issue_left - 1)]

        # receiver: words come back in command order, the head request's first; mark its bytes
        is_last = received == head.last_word
        full = Const((1 << g.word_bytes) - 1, g.word_bytes)
        keep = Mux(received == 0, head.first_mask, full) & Mux(is_last, head.last_mask, full)
        m.d.comb += [
            self.data.valid.eq(self.rdata.valid & queue.r_rdy),
            self.data.payload.data.eq(self.rdata.payload.data),
            self.data.payload.keep.eq(keep),
            self.data.payload.last.eq(is_last),
            self.rdata.ready.eq(self.data.ready & queue.r_rdy),
        ]
        passed = self.data.valid & self.data.ready
        with m.If(passed):
            m.d.sync += received.eq(received + 1)
            with m.If(is_last):
                m.d.comb += queue.r_en.eq(1)
                m.d.sync += received.eq(0)
        m.d.sync += outstanding.eq(outstanding + issued - passed)
        return m


class DMAWriter(wiring.Component):
    """Lane-aligned word stream -> DRAM byte range (see the module docstring).

    Ports: ``request`` In(addr, length), ``data`` In(data, keep, last; ``last`` is not needed:
    the writer counts words), ``cmd`` Out and ``wdata`` Out (the native port's write half),
    ``busy``.
    """

    def __init__(self, data_width: int, address_width: int):
        self.geometry = g = _Geometry(data_width, address_width)
        super().__init__(
            {
                "request": In(stream.Signature(request_layout(g.byte_address_width))),
                "data": In(stream.Signature(words_layout(data_width))),
                "cmd": Out(stream.Signature(cmd_layout(address_width))),
                "wdata": Out(stream.Signature(wdata_layout(data_width))),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        count_width = g.address_width + 1
        span = _Range(m, self.request.payload.addr, self.request.payload.length, g.word_bytes,
                      count_width)  # fmt: skip

        issue_addr = Signal(g.address_width)
        issue_left = Signal(count_width)  # write commands still to issue
        accept_left = Signal(count_width)  # data words still to take
        buffered = Signal(count_width)  # data words handed over without their command yet
        first = Signal()
        first_mask = Signal(g.word_bytes)
        last_mask = Signal(g.word_bytes)

        idle = (issue_left == 0) & (accept_left == 0)
        m.d.comb += [self.request.ready.eq(idle), self.busy.eq(~idle)]
        with m.If(self.request.valid & idle & (self.request.payload.length != 0)):
            m.d.sync += [
                issue_addr.eq(span.first_word),
                issue_left.eq(span.count),
                accept_left.eq(span.count),
                first.eq(1),
                first_mask.eq(span.first_mask),
                last_mask.eq(span.last_mask),
            ]

        # data: into the wrapper's write buffer with the byte mask of the range
        is_last = accept_left == 1
        full = Const((1 << g.word_bytes) - 1, g.word_bytes)
        mask = Mux(first, first_mask, full) & Mux(is_last, last_mask, full)
        m.d.comb += [
            self.wdata.valid.eq(self.data.valid & (accept_left != 0)),
            self.wdata.payload.data.eq(self.data.payload.data),
            self.wdata.payload.we.eq(mask & self.data.payload.keep),
            self.data.ready.eq(self.wdata.ready & (accept_left != 0)),
        ]
        pushed = self.wdata.valid & self.wdata.ready
        with m.If(pushed):
            m.d.sync += [accept_left.eq(accept_left - 1), first.eq(0)]

        # commands: one per word whose data is already buffered (never blocks the port)
        m.d.comb += [
            self.cmd.valid.eq(buffered != 0),
            self.cmd.payload.addr.eq(issue_addr),
            self.cmd.payload.we.eq(1),
        ]
        issued = self.cmd.valid & self.cmd.ready
        with m.If(issued):
            m.d.sync += [issue_addr.eq(issue_addr + 1), issue_left.eq(issue_left - 1)]
        m.d.sync += buffered.eq(buffered + pushed - issued)
        return m


class CommandArbiter(wiring.Component):
    """Round-robin between two command streams; the grant moves only after a handshake or
    while the granted side is not requesting (the stream rule: an offered command stays)."""

    def __init__(self, address_width: int):
        signature = stream.Signature(cmd_layout(address_width))
        super().__init__({"a": In(signature), "b": In(signature), "out": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        grant_b = Signal()
        m.d.comb += [
            self.out.valid.eq(Mux(grant_b, self.b.valid, self.a.valid)),
            self.out.payload.eq(Mux(grant_b, self.b.payload, self.a.payload)),
            self.a.ready.eq(~grant_b & self.out.ready),
            self.b.ready.eq(grant_b & self.out.ready),
        ]
        other_valid = Mux(grant_b, self.a.valid, self.b.valid)
        with m.If((~self.out.valid | self.out.ready) & other_valid):
            m.d.sync += grant_b.eq(~grant_b)
        return m


class DMA(wiring.Component):
    """A :class:`DMAReader` and a :class:`DMAWriter` on one native port (``dram``).

    Ports: ``read_request``/``read_data``/``read_busy``, ``write_request``/``write_data``/
    ``write_busy``, ``dram`` (Out :class:`hw.soc.dram.NativePortSignature`; connect it to
    ``LiteDRAMNative.port`` with ``wiring.connect``).
    """

    def __init__(self, data_width: int, address_width: int, in_flight: int = READ_BUFFER_DEPTH,
                 queue_depth: int = REQUEST_QUEUE_DEPTH):  # fmt: skip
        self.reader = DMAReader(data_width, address_width, in_flight, queue_depth)
        self.writer = DMAWriter(data_width, address_width)
        self.arbiter = CommandArbiter(address_width)
        reader, writer = self.reader.signature.members, self.writer.signature.members
        super().__init__(
            {
                "read_request": reader["request"],
                "read_data": reader["data"],
                "read_busy": Out(1),
                "write_request": writer["request"],
                "write_data": writer["data"],
                "write_busy": Out(1),
                "dram": Out(NativePortSignature(data_width, address_width)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self.reader
        m.submodules.writer = writer = self.writer
        m.submodules.arbiter = arbiter = self.arbiter
        wiring.connect(m, wiring.flipped(self.read_request), reader.request)
        wiring.connect(m, reader.data, wiring.flipped(self.read_data))
        wiring.connect(m, wiring.flipped(self.write_request), writer.request)
        wiring.connect(m, wiring.flipped(self.write_data), writer.data)
        wiring.connect(m, reader.cmd, arbiter.a)
        wiring.connect(m, writer.cmd, arbiter.b)
        wiring.connect(m, arbiter.out, wiring.flipped(self.dram.cmd))
        wiring.connect(m, writer.wdata, wiring.flipped(self.dram.wdata))
        wiring.connect(m, wiring.flipped(self.dram.rdata), reader.rdata)
        m.d.comb += [self.read_busy.eq(reader.busy), self.write_busy.eq(writer.busy)]
        return m

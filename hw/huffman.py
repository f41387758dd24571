"""On-chip canonical Huffman decoder: a compressed weight stream in, codebook indices out.

The host sends a layer's decode table once (``HUFFMAN_TABLE``, layout in :mod:`fpga.layout`)
and then each weight chunk as a Huffman bitstream (``HUFFMAN_STREAM``: an 8-byte header with the
symbol count and destination WEIGHT address, then the bits, MSB first). The decoder turns the bits
into one codebook index per cycle; the SoC writes them into the engine's weight buffer.

Decoding is the parallel form of canonical decoding (zlib's ``puff``): the next ``MAX_LENGTH``
bits of the bit buffer are compared, for every code length ``l`` at once, with that length's
first code and code count; the shortest length whose ``l``-bit prefix lies inside
``[first[l], first[l] + count[l])`` is the code, and ``offset[l] + prefix - first[l]`` is the
symbol's rank in the table's symbol list (a 256 x 8 asynchronous-read memory, i.e. LUT RAM). The
bit buffer consumes that length and takes in a new input word in the same cycle whenever the
word fits, so with ``in_width >= MAX_LENGTH`` the buffer holds at least ``MAX_LENGTH`` bits after
every cycle and the decoder emits one symbol per cycle for any code. Fed one byte per cycle (as
by the link in ``hw.top``), it emits one symbol per cycle while the mean code length is <= 8 bits.

Stream bytes carry their address: the decoder takes a byte only at the next expected address and
ignores the rest, so a link retry that replays a WRITE frame cannot feed bits twice (a replayed
header re-arms the decoder and the chunk is decoded again from its start). An invalid code, or
``abort`` (the engine was started before the chunk was complete), sets the sticky ``error``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.layout import (
    HUFFMAN_HEADER_BYTES,
    HUFFMAN_LENGTH_BASE,
    HUFFMAN_LENGTH_BYTES,
    HUFFMAN_MAX_LENGTH,
    HUFFMAN_TABLE_BYTES,
)

L = HUFFMAN_MAX_LENGTH


class HuffmanDecoder(wiring.Component):
    """``table_*``: byte writes into the decode table. ``stream_*``: byte writes of a chunk
    (header + bits) with backpressure (``stream_ready``). ``o``: decoded symbols with their
    destination address in the weight buffer (``amaranth.lib.stream``)."""

    def __init__(self, in_width: int = 8, addr_width: int = 24):
        if in_width % 8 or in_width > 32:
            raise ValueError("in_width must be 8, 16, 24 or 32")
        self.in_width = in_width
        super().__init__(
            {
                "table_en": In(1),
                "table_addr": In(range(HUFFMAN_TABLE_BYTES)),
                "table_data": In(8),
                "stream_en": In(1),
                "stream_addr": In(addr_width),
                "stream_data": In(in_width),
                "stream_ready": Out(1),
                "o": Out(stream.Signature(unsigned(8 + addr_width))),
                "busy": Out(1),
                "error": Out(1),
                "abort": In(1),
                "clear_error": In(1),
            }
        )
        self.addr_width = addr_width

    def elaborate(self, platform):
        m = Module()
        w_in = self.in_width
        width = L + w_in  # bit buffer: valid bits MSB-aligned
        in_bytes = w_in // 8

        # -- the table: symbols by rank (LUT RAM) and per-length first / count / offset ------------
        m.submodules.symbols = symbols = Memory(shape=8, depth=256, init=[])
        sym_write = symbols.write_port()
        sym_read = symbols.read_port(domain="comb")
        m.d.comb += [
            sym_write.addr.eq(self.table_addr[:8]),
            sym_write.data.eq(self.table_data),
            sym_write.en.eq(self.table_en & (self.table_addr < 256)),
        ]
        first = [Signal(16, name=f"first_{n + 1}") for n in range(L)]
        count = [Signal(16, name=f"count_{n + 1}") for n in range(L)]
        offset = [Signal(16, name=f"offset_{n + 1}") for n in range(L)]
        with m.If(self.table_en):
            for n in range(L):
                base = HUFFMAN_LENGTH_BASE + n * HUFFMAN_LENGTH_BYTES
                for field_index, field in enumerate((first[n], count[n], offset[n])):
                    for byte in range(2):
                        with m.If(self.table_addr == base + 2 * field_index + byte):
                            m.d.sync += field[8 * byte : 8 * byte + 8].eq(self.table_data)

        # -- chunk header: symbol count, destination; writing its last byte arms the decoder -------
        header = [Signal(8, name=f"header_{i}") for i in range(HUFFMAN_HEADER_BYTES)]
        remaining = Signal(32)
        dest = Signal(self.addr_width)
        expected = Signal(self.addr_width)  # next stream address taken
        buf = Signal(width)
        have = Signal(range(width + 1))
        m.d.comb += self.busy.eq(remaining != 0)

        # -- decode: every length at once, the shortest match wins -----------------------------
        window = buf[width - L :]
        found = Signal()
        length = Signal(range(L + 1))
        rank = Signal(16)
        for n in reversed(range(L)):  # the last assignment (shortest length) wins
            prefix = window[L - (n + 1) :]
            diff = Signal(signed(18), name=f"diff_{n + 1}")
            m.d.comb += diff.eq(prefix - first[n])
            with m.If((diff >= 0) & (diff < count[n])):
                m.d.comb += [found.eq(1), length.eq(n + 1), rank.eq(offset[n] + diff)]
        m.d.comb += sym_read.addr.eq(rank)

        emit = Signal()
        m.d.comb += [
            emit.eq((remaining != 0) & found & (length <= have)),
            self.o.valid.eq(emit),
            self.o.payload.eq(Cat(sym_read.data, dest)),
        ]
        taken = Signal()  # a symbol leaves this cycle
        m.d.comb += taken.eq(emit & self.o.ready)
        used = Signal(range(L + 1))
        m.d.comb += used.eq(Mux(taken, length, 0))
        left = Signal(range(width + 1))
        m.d.comb += left.eq(have - used)

        is_header = Signal()
        m.d.comb += is_header.eq(self.stream_addr < HUFFMAN_HEADER_BYTES)
        fits = Signal()
        m.d.comb += fits.eq(left <= width - w_in)
        # a byte at the wrong address (a replay) is taken and ignored; bits wait for room
        m.d.comb += self.stream_ready.eq(
            is_header | (self.stream_addr != expected) | (remaining == 0) | fits
        )
        accept = Signal()
        m.d.comb += accept.eq(
            self.stream_en & ~is_header & (self.stream_addr == expected) & (remaining != 0) & fits
        )

        shifted = Signal(width)
        m.d.comb += shifted.eq(buf << used)
        with m.If(accept):
            # new bits go right below the ``left`` valid ones (byte 0 of the word first)
            word = Cat(*reversed([self.stream_data[8 * i : 8 * i + 8] for i in range(in_bytes)]))
            placed = Signal(width + w_in)
            m.d.comb += placed.eq(Cat(Const(0, width), word) >> left)
            m.d.sync += [
                buf.eq(shifted | placed[w_in:]),
                have.eq(left + w_in),
                expected.eq(expected + in_bytes),
            ]
        with m.Else():
            m.d.sync += [buf.eq(shifted), have.eq(left)]
        with m.If(taken):
            m.d.sync += [remaining.eq(remaining - 1), dest.eq(dest + 1)]

        with m.If(self.stream_en & is_header):
            for i in range(HUFFMAN_HEADER_BYTES):
                with m.If(self.stream_addr == i):
                    m.d.sync += header[i].eq(self.stream_data[:8])
            with m.If(self.stream_addr == HUFFMAN_HEADER_BYTES - 1):
                m.d.sync += [
                    remaining.eq(Cat(*header[:4])),
                    dest.eq(Cat(*header[4:7], self.stream_data[:8])),
                    expected.eq(HUFFMAN_HEADER_BYTES),
                    have.eq(0),
                    buf.eq(0),
                ]

        invalid = (remaining != 0) & ~found & (have >= L)
        with m.If(invalid | (self.abort & (remaining != 0))):
            m.d.sync += [self.error.eq(1), remaining.eq(0)]
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        return m

"""On-chip canonical Huffman decoder: a compressed weight stream in, codebook indices out.

The host sends a layer's decode table once (``HUFFMAN_TABLE``, layout in :mod:`fpga.spec.layout`)
and then each weight chunk as a Huffman bitstream (``HUFFMAN_STREAM``: an 8-byte header with the
symbol count and destination WEIGHT address, then the bits, MSB first). The decoder turns the bits
into one codebook index per cycle; the SoC writes them into the engine's weight buffer.

Decoding is the parallel form of canonical decoding (zlib's ``puff``): the next ``MAX_LENGTH``
bits of the bit buffer are compared, for every code length ``l`` at once, with that length's
limit ``first[l] + count[l]``; the shortest length whose ``l``-bit prefix is below its limit is
the code (canonical codes make it so), and ``offset[l] + prefix - first[l]`` is the
symbol's rank in the table's symbol list (a 256 x 8 asynchronous-read memory, i.e. LUT RAM). The
symbol goes to an output register (``o``, with backpressure); input words pass an input register
first, so neither side's logic is in series with the decode loop. The bit buffer
(``16 + 2 * in_width`` bits) takes in a new input word whenever its registered fill level leaves
room, placing it below the valid bits, and shifts the decoded code out in the same cycle, so the
decode path holds one barrel shifter. With ``in_width >= MAX_LENGTH`` the buffer never holds fewer
than ``MAX_LENGTH`` bits once filled, and the decoder emits one symbol per cycle for any code. Fed
one byte per cycle (as by the link in ``hw.soc.top``), it emits one symbol per cycle while the mean
code length is <= 8.

Stream bytes carry their address: the decoder takes a byte only at the next expected address and
ignores the rest, so a link retry that replays a WRITE frame cannot feed bits twice (a replayed
header re-arms the decoder and the chunk is decoded again from its start). An invalid code, or
``abort`` (the engine was started before the chunk was complete), sets the sticky ``error``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.layout import (
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
        width = L + 2 * w_in  # bit buffer: valid bits MSB-aligned
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

        # -- decode: every length at once, the shortest match wins -----------------------------
        window = buf[width - L :]
        found = Signal()
        length = Signal(range(L + 1))
        rank = Signal(16)
        # canonical codes: the code's length is the shortest l whose l-bit prefix is below
        # limit[l] = first[l] + count[l] (shorter prefixes of a longer code are >= the limit,
        # longer ones below it), so the loop-carried path is 16 compares and a priority encoder
        limit = [Signal(17, name=f"limit_{n + 1}") for n in range(L)]
        for n in range(L):
            m.d.sync += limit[n].eq(first[n] + count[n])
        for n in reversed(range(L)):  # the last assignment (shortest length) wins
            prefix = window[L - (n + 1) :]
            with m.If(prefix < limit[n]):
                m.d.comb += [
                    found.eq(1),
                    length.eq(n + 1),
                    rank.eq(offset[n] + prefix - first[n]),
                ]
        m.d.comb += sym_read.addr.eq(rank)

        # the output register: a symbol waits there for ``o.ready``
        out_valid = Signal()
        out_payload = Signal(8 + self.addr_width)
        can = Signal()
        m.d.comb += [
            can.eq(~out_valid | self.o.ready),
            self.o.valid.eq(out_valid),
            self.o.payload.eq(out_payload),
        ]
        emit = Signal()
        m.d.comb += emit.eq((remaining != 0) & found & (length <= have))
        taken = Signal()  # a symbol is decoded (and consumed from the bit buffer) this cycle
        m.d.comb += taken.eq(emit & can)
        with m.If(can):
            m.d.sync += [out_valid.eq(emit), out_payload.eq(Cat(sym_read.data, dest))]
        used = Signal(range(L + 1))
        m.d.comb += used.eq(Mux(taken, length, 0))

        # the input register: the link's frame memory feeds a register, not the bit buffer
        in_valid = Signal()
        in_addr = Signal(self.addr_width)
        in_data = Signal(w_in)
        done_in = Signal()  # the registered word is used (or ignored) this cycle
        m.d.comb += self.stream_ready.eq(~in_valid | done_in)
        with m.If(self.stream_ready):
            m.d.sync += [
                in_valid.eq(self.stream_en),
                in_addr.eq(self.stream_addr),
                in_data.eq(self.stream_data),
            ]
        is_header = Signal()
        m.d.comb += is_header.eq(in_addr < HUFFMAN_HEADER_BYTES)
        fits = Signal()  # from the registered fill level only: off the decode path
        m.d.comb += fits.eq(have <= width - w_in)
        # a byte at the wrong address (a replay) is taken and ignored; bits wait for room
        m.d.comb += done_in.eq(
            in_valid & (is_header | (in_addr != expected) | (remaining == 0) | fits)
        )
        accept = Signal()
        m.d.comb += accept.eq(
            in_valid & ~is_header & (in_addr == expected) & (remaining != 0) & fits
        )

        # new bits go right below the ``have`` valid ones (byte 0 of the word first), then the
        # decoded code is shifted out: one barrel shifter on the decode path
        word = Cat(*reversed([in_data[8 * i : 8 * i + 8] for i in range(in_bytes)]))
        placed = Signal(width)
        m.d.comb += placed.eq(Mux(accept, Cat(Const(0, width - w_in), word) >> have, 0))
        m.d.sync += [
            buf.eq((buf | placed) << used),
            have.eq(have + Mux(accept, w_in, 0) - used),
        ]
        with m.If(accept):
            m.d.sync += expected.eq(expected + in_bytes)
        with m.If(taken):
            m.d.sync += [remaining.eq(remaining - 1), dest.eq(dest + 1)]

        with m.If(in_valid & is_header):
            for i in range(HUFFMAN_HEADER_BYTES):
                with m.If(in_addr == i):
                    m.d.sync += header[i].eq(in_data[:8])
            with m.If(in_addr == HUFFMAN_HEADER_BYTES - 1):
                m.d.sync += [
                    remaining.eq(Cat(*header[:4])),
                    dest.eq(Cat(*header[4:7], in_data[:8])),
                    expected.eq(HUFFMAN_HEADER_BYTES),
                    have.eq(0),
                    buf.eq(0),
                ]

        m.d.comb += self.busy.eq((remaining != 0) | out_valid | in_valid)
        invalid = (remaining != 0) & ~found & (have >= L)
        with m.If(invalid | (self.abort & (remaining != 0))):
            m.d.sync += [self.error.eq(1), remaining.eq(0)]
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        return m

"""The sequencer's two movers (``hw.soc.sequencer``): one DMA row at a time between DRAM and the
engine's buffer ports, asked for on :mod:`amaranth.lib.stream` ports by the command FSM.

- :class:`LoadMover` (DRAM -> buffer write port): a ``request`` is a DMA read of ``length`` bytes
  at ``addr``; a plain row's lane-aligned words are taken apart into chunks on the write port
  (``write``, ``hw.engine.ports``) from buffer byte ``buffer``. Plain rows are pipelined: one is
  taken (its DMA read sent) whenever its target (buffer byte, DRAM lane, length, space, wide)
  fits a ``queue_depth``-deep FIFO, while the rows before it still move; the byte side takes the
  targets in order and starts the next row (with its first word, if it is there) in the cycle
  the last chunk of the one before goes. ``busy``: a row taken is not yet written. A ``fill``
  reads a WINDOWS LOAD's span word by word into the window buffer instead. A ``window`` request
  cuts one row from the window buffer (window byte ``offset``); the row after it is taken in the
  cycle its last chunk goes (one cycle a window).
- :class:`StoreMover` (buffer read port -> DRAM): a ``request`` is a DMA write of ``length`` bytes
  at ``addr`` from buffer byte ``buffer``: reads (one chunk a cycle, answered a cycle later) are
  packed into lane-aligned words for the DMA writer; the row ends when the writer's ``busy`` falls.

Requests are taken in the cycle they are offered when the mover is idle (a DMA-backed request
with the DMA's request; the load mover's plain rows also while earlier rows move; its ``fill``
and ``window`` requests only when no row is queued or moving), so the FSM's row costs are the
movers' cycles: ``done`` pulses in the
cycle a transfer ends (the last chunk written, the span's last word, the writer drained);
``dma_wait`` is high in the cycles spent waiting for the DMA. Every row was checked by the FSM
before it is asked for: the movers only move bytes.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import SPACE_BITS, port_address_bits
from hw.engine.ports import read_signature, write_signature
from hw.soc.dma import REQUEST_QUEUE_DEPTH, request_layout, words_layout


def over(value, bits):
    """``value`` does not fit ``bits`` bits."""
    return value[bits:] != 0 if len(value) > bits else Const(0)


class PortShape:
    """Widths the sequencer and its movers share: the DMA word, the DRAM byte address, the buffer
    ports (``transfer_bytes`` a chunk, ``addr_bits``/``space_bits``), the longest row that passes
    the checks, the window buffer."""

    def __init__(self, config, word_bytes, dram_bits, transfer_bytes, row_bytes, window_bytes,
                 length_shape):  # fmt: skip
        self.config = config  # the buffer ports' widths (hw.engine.ports)
        self.word_bytes, self.dram_bits = word_bytes, dram_bits
        self.transfer_bytes = transfer_bytes
        self.addr_bits, self.space_bits = port_address_bits(config), SPACE_BITS
        self.row_bytes, self.window_bytes, self.length_shape = row_bytes, window_bytes, length_shape
        self.lane_bits = max(1, (word_bytes - 1).bit_length())
        self.window_words = window_bytes // word_bytes + 1

    def target(self) -> dict:
        """The buffer side of a row: its first byte, its space, chunks wider than a byte."""
        return {"buffer": self.addr_bits, "space": self.space_bits, "wide": 1}

    def load_layout(self) -> data.StructLayout:
        """A DMA read: a row (``fill`` low) or a WINDOWS LOAD's span (``fill`` high)."""
        return data.StructLayout(
            {"addr": self.dram_bits, "length": self.length_shape, "fill": 1, **self.target()}
        )

    def window_layout(self) -> data.StructLayout:
        """A row cut from the window buffer, from its byte ``offset``."""
        offset = range(self.window_bytes + self.word_bytes)
        return data.StructLayout({"offset": offset, "length": self.length_shape, **self.target()})

    def store_layout(self) -> data.StructLayout:
        """A DMA write of a row read from the buffer."""
        return data.StructLayout({"addr": self.dram_bits, "length": self.length_shape,
                                  **self.target()})  # fmt: skip


class _Row:
    """A row's progress: the bytes not yet handed on (``left``), the buffer address of the next
    (``at``), its DRAM lane (``lane``), the target latched from the request."""

    def __init__(self, shape: PortShape, name: str):
        self.left = Signal(range(shape.row_bytes + 1), name=f"{name}_left")
        self.at = Signal(shape.addr_bits, name=f"{name}_at")
        self.lane = Signal(range(shape.word_bytes + 1), name=f"{name}_lane")
        self.space = Signal(shape.space_bits, name=f"{name}_space")
        self.wide = Signal(name=f"{name}_wide")

    def start(self, m, payload, lane):
        m.d.sync += [
            self.left.eq(payload.length),
            self.at.eq(payload.buffer),
            self.lane.eq(lane),
            self.space.eq(payload.space),
            self.wide.eq(payload.wide),
        ]


def chunk(m, shape: PortShape, wide, name, buffer_at, word_lane, left):
    """Bytes of the next chunk at buffer byte ``buffer_at``, DRAM lane ``word_lane``: n = min(bytes
    to the end of the buffer block, to the end of the DRAM word, ``left``), 1 unless ``wide``."""
    width, word_bytes = shape.transfer_bytes, shape.word_bytes
    block_bits = (width - 1).bit_length()
    n = Signal(range(width + 1), name=name)
    to_block = Signal(range(width + 1), name=f"{name}_to_block")
    to_word = Signal(range(word_bytes + 1), name=f"{name}_to_word")
    fits = Signal(range(width + 1), name=f"{name}_fits")
    short = Signal(name=f"{name}_short")  # fewer than ``fits`` bytes left
    m.d.comb += [
        to_block.eq(width - (buffer_at[:block_bits] if block_bits else 0)),
        to_word.eq(word_bytes - word_lane),
        fits.eq(Mux(to_word < to_block, to_word, to_block)),
        short.eq(~over(left, len(n)) & (left[: len(n)] < fits)),
        n.eq(Mux(wide, Mux(short, left[: len(n)], fits), 1)),
    ]
    return n


def _lane_of(shape: PortShape, addr):
    return addr[: shape.lane_bits] if shape.word_bytes > 1 else Const(0, 1)


class LoadMover(wiring.Component):
    """DRAM -> the buffer write port, and the window buffer (see the module docstring)."""

    def __init__(self, shape: PortShape, queue_depth: int = REQUEST_QUEUE_DEPTH):
        self.shape, self.queue_depth = shape, queue_depth
        width = 8 * shape.word_bytes
        super().__init__(
            {
                "request": In(stream.Signature(shape.load_layout())),
                "window": In(stream.Signature(shape.window_layout())),
                "done": Out(1),
                "busy": Out(1),
                "dma_wait": Out(1),
                "dma_read_request": Out(stream.Signature(request_layout(shape.dram_bits))),
                "dma_read_data": In(stream.Signature(words_layout(width))),
                "write": Out(write_signature(shape.config)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        shape, word_bytes = self.shape, self.shape.word_bytes
        lane_bits = shape.lane_bits
        row = _Row(shape, "load")
        window_at = Signal(range(shape.window_bytes + word_bytes))  # the next byte's window byte
        filled = Signal(range(shape.window_words + 1))
        from_window = Signal()
        # the window buffer, and one more word after it: the word being taken apart
        word_slot = shape.window_words
        m.submodules.window = window = Memory(
            shape=unsigned(8 * word_bytes), depth=shape.window_words + 1, init=[]
        )
        fill = window.write_port()
        peek = window.read_port(domain="comb")
        m.d.comb += [
            fill.addr.eq(word_slot),
            fill.data.eq(self.dma_read_data.payload.data),
            peek.addr.eq(word_slot),
        ]
        # the chunk at ``row.at`` (DRAM lane ``row.lane``, or ``window_at``'s) through the
        # byte-lane shifter onto the write port
        load_lane = Signal(range(word_bytes + 1))
        m.d.comb += load_lane.eq(
            Mux(from_window, window_at[:lane_bits] if word_bytes > 1 else 0, row.lane)
        )
        n = chunk(m, shape, row.wide, "chunk", row.at, load_lane, row.left)
        loaded = peek.data  # shifted right by ``load_lane`` bytes: one 2:1 stage a bit
        for b in reversed(range(lane_bits if word_bytes > 1 else 0)):
            loaded = Mux(load_lane[b], loaded >> (8 << b), loaded)
        loaded = loaded[: 8 * shape.transfer_bytes]

        request, data_in = self.request, self.dma_read_data
        m.d.comb += [
            self.write.payload.space.eq(row.space),
            self.dma_read_request.payload.addr.eq(request.payload.addr),
            self.dma_read_request.payload.length.eq(request.payload.length),
        ]
        write_chunk = [
            self.write.valid.eq(1),
            self.write.payload.addr.eq(row.at),
            self.write.payload.data.eq(loaded),
            self.write.payload.count.eq(n),
        ]
        last_chunk = self.write.ready & (row.left == n)

        # the plain rows asked for whose bytes have not started moving, in order: their targets
        target = data.StructLayout(
            {"length": shape.length_shape, "lane": len(row.lane), **shape.target()}
        )
        m.submodules.rows = rows = SyncFIFO(width=target.size, depth=self.queue_depth)
        entry = data.View(target, Signal(target.size, name="row_entry"))
        head = data.View(target, rows.r_data)
        m.d.comb += [
            entry.length.eq(request.payload.length),
            entry.lane.eq(_lane_of(shape, request.payload.addr)),
            entry.buffer.eq(request.payload.buffer),
            entry.space.eq(request.payload.space),
            entry.wide.eq(request.payload.wide),
            rows.w_data.eq(entry.as_value()),
        ]
        moving = Signal()  # a plain row's bytes are moving (WORD/BYTES)
        idle = Signal()  # the IDLE state
        queued = rows.w_level != 0
        m.d.comb += self.busy.eq(~idle | queued)
        # a plain row is taken whenever its target fits the queue (while the rows before it
        # move); a fill only when every row before it has moved
        take_row = ~request.payload.fill & rows.w_rdy & (idle | moving)
        take_fill = request.payload.fill & idle & ~queued
        offer = request.valid & (take_row | take_fill)
        m.d.comb += [
            self.dma_read_request.valid.eq(offer),
            request.ready.eq(self.dma_read_request.ready & (take_row | take_fill)),
            rows.w_en.eq(offer & ~request.payload.fill & self.dma_read_request.ready),
        ]

        def next_row():
            """The next queued row's target: its first word is the DMA's next one."""
            m.d.comb += rows.r_en.eq(1)
            m.d.sync += [
                row.left.eq(head.length),
                row.at.eq(head.buffer),
                row.lane.eq(head.lane),
                row.space.eq(head.space),
                row.wide.eq(head.wide),
            ]

        def take_window():
            row.start(m, self.window.payload, 0)
            m.d.sync += window_at.eq(self.window.payload.offset)
            m.next = "WINDOW"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    idle.eq(1),
                    self.dma_wait.eq(offer & ~self.dma_read_request.ready),
                    self.window.ready.eq(~queued & ~request.valid),
                ]
                with m.If(rows.r_rdy):
                    next_row()
                    m.next = "WORD"
                with m.Elif(take_fill & request.valid & self.dma_read_request.ready):
                    row.start(m, request.payload, _lane_of(shape, request.payload.addr))
                    m.d.sync += filled.eq(0)
                    m.next = "FILL"
                with m.Elif(self.window.valid & ~queued & ~request.valid):
                    take_window()

            # a row: DMA words -> chunks on the buffer write port (``lane``: the row's first
            # word starts at its address' lane, the next at 0)
            with m.State("WORD"):
                m.d.comb += [
                    moving.eq(1),
                    data_in.ready.eq(1),
                    self.dma_wait.eq(~data_in.valid),
                ]
                with m.If(data_in.valid):
                    m.d.comb += fill.en.eq(1)
                    m.next = "BYTES"

            with m.State("BYTES"):
                m.d.comb += moving.eq(1)
                m.d.comb += write_chunk
                with m.If(self.write.ready):
                    m.d.sync += [row.at.eq(row.at + n), row.left.eq(row.left - n)]
                    m.d.sync += row.lane.eq(row.lane + n)
                    with m.If(row.left == n):
                        m.d.comb += self.done.eq(1)
                        # the next queued row goes on in the same cycle, with its first word if
                        # it is there
                        with m.If(rows.r_rdy):
                            next_row()
                            m.d.comb += data_in.ready.eq(1)
                            with m.If(data_in.valid):
                                m.d.comb += fill.en.eq(1)
                            with m.Else():
                                m.next = "WORD"
                        with m.Else():
                            m.next = "IDLE"
                    with m.Elif(row.lane + n == word_bytes):
                        # the word's last byte: take the next word in the same cycle if it is
                        # there (no bubble between words), else wait for it
                        m.d.sync += row.lane.eq(0)
                        m.d.comb += data_in.ready.eq(1)
                        with m.If(data_in.valid):
                            m.d.comb += fill.en.eq(1)
                        with m.Else():
                            m.next = "WORD"

            # a WINDOWS LOAD's span, word by word into the window buffer
            with m.State("FILL"):
                m.d.comb += [
                    data_in.ready.eq(1),
                    fill.addr.eq(filled),
                    fill.en.eq(data_in.valid),
                    self.dma_wait.eq(~data_in.valid),
                ]
                with m.If(data_in.valid):
                    m.d.sync += filled.eq(filled + 1)
                    with m.If(data_in.payload.last):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"

            # a row cut from the window buffer; the next row is taken as its last chunk goes
            with m.State("WINDOW"):
                m.d.comb += write_chunk
                m.d.comb += [
                    from_window.eq(1),
                    peek.addr.eq(window_at[lane_bits:] if word_bytes > 1 else window_at),
                    self.window.ready.eq(last_chunk),
                ]
                with m.If(self.write.ready):
                    m.d.sync += [row.at.eq(row.at + n), row.left.eq(row.left - n)]
                    m.d.sync += window_at.eq(window_at + n)
                with m.If(last_chunk):
                    m.d.comb += self.done.eq(1)
                    with m.If(self.window.valid):
                        take_window()
                    with m.Else():
                        m.next = "IDLE"
        return m


class StoreMover(wiring.Component):
    """The buffer read port -> DRAM (see the module docstring)."""

    def __init__(self, shape: PortShape):
        self.shape = shape
        width = 8 * shape.word_bytes
        super().__init__(
            {
                "request": In(stream.Signature(shape.store_layout())),
                "done": Out(1),
                "busy": Out(1),  # a row taken is not yet in DRAM
                "dma_wait": Out(1),
                "dma_write_request": Out(stream.Signature(request_layout(shape.dram_bits))),
                "dma_write_data": Out(stream.Signature(words_layout(width))),
                "dma_write_busy": In(1),
                "read": Out(read_signature(shape.config)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        shape, word_bytes = self.shape, self.shape.word_bytes
        request = self.request
        # receive side (``row``) and issue side (``issue_*``) of the same chunk sequence
        row = _Row(shape, "store")
        issue_left = Signal(range(shape.row_bytes + 1))
        issue_at = Signal(shape.addr_bits)
        issue_lane = Signal(range(word_bytes + 1))
        keep = Signal(word_bytes)
        word = Signal(8 * word_bytes)  # the word being packed (only its ``keep`` bytes matter)
        # the finished word on its way to the DMA writer
        push_word = Signal(8 * word_bytes)
        push_keep = Signal(word_bytes)
        push_last = Signal()
        push_valid = Signal()
        m.d.comb += [
            self.read.request.payload.space.eq(row.space),
            self.dma_write_request.payload.addr.eq(request.payload.addr),
            self.dma_write_request.payload.length.eq(request.payload.length),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    self.dma_write_request.valid.eq(request.valid),
                    request.ready.eq(self.dma_write_request.ready),
                    self.dma_wait.eq(request.valid & ~self.dma_write_request.ready),
                ]
                with m.If(request.valid & self.dma_write_request.ready):
                    lane = _lane_of(shape, request.payload.addr)
                    row.start(m, request.payload, lane)
                    m.d.sync += [
                        issue_left.eq(request.payload.length),
                        issue_at.eq(request.payload.buffer),
                        issue_lane.eq(lane),
                        keep.eq(0),
                    ]
                    m.next = "READ"

            with m.State("READ"):
                m.d.comb += self.busy.eq(1)
                # reads (one chunk a cycle, answered a cycle later) are packed into DRAM words;
                # a finished word moves to the push register and goes to the DMA writer while
                # the next word's chunks are read (one cycle a chunk when the writer keeps up)
                push_taken = push_valid & self.dma_write_data.ready
                m.d.comb += [
                    self.dma_write_data.valid.eq(push_valid),
                    self.dma_write_data.payload.data.eq(push_word),
                    self.dma_write_data.payload.keep.eq(push_keep),
                    self.dma_write_data.payload.last.eq(push_last),
                    self.dma_wait.eq(push_valid & ~self.dma_write_data.ready),
                ]
                with m.If(push_taken):
                    m.d.sync += push_valid.eq(0)
                    with m.If(push_last):
                        m.next = "DRAIN"
                receive_word_done = Signal()
                # issue side: the next chunk to read. A chunk that finishes a word is read only
                # when the push register will be free when it arrives (no stall: a read's
                # answer cannot wait)
                issue_n = chunk(m, shape, row.wide, "issue_chunk", issue_at, issue_lane, issue_left)
                issue_word_done = (issue_left == issue_n) | (issue_lane + issue_n == word_bytes)
                push_free = ~receive_word_done & (~push_valid | push_taken)
                can_issue = (issue_left != 0) & (~issue_word_done | push_free)
                m.d.comb += [
                    self.read.request.valid.eq(can_issue),
                    self.read.request.payload.addr.eq(issue_at),
                ]
                with m.If(can_issue):
                    m.d.sync += [
                        issue_at.eq(issue_at + issue_n),
                        issue_left.eq(issue_left - issue_n),
                        issue_lane.eq(Mux(issue_word_done, 0, issue_lane + issue_n)),
                    ]
                self._receive(m, row, keep, word, receive_word_done,
                              (push_word, push_keep, push_last, push_valid))  # fmt: skip

            with m.State("DRAIN"):  # the row's last word is out: wait until DRAM has it all
                m.d.comb += [self.busy.eq(1), self.dma_wait.eq(self.dma_write_busy)]
                with m.If(~self.dma_write_busy):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m

    def _receive(self, m, row, keep, word, receive_word_done, push):
        """Receive side: the chunk sequence at ``row.at``, placed at DRAM lane ``row.lane``:
        byte ``j`` of the chunk (block byte ``at % width + j``, or the response's byte alone in a
        byte space) goes to word byte ``lane + j``: one rotation of the block by ``lane - at`` (mod
        width) puts every block byte on its word byte mod width."""
        shape, word_bytes = self.shape, self.shape.word_bytes
        width = shape.transfer_bytes
        block_bits = (width - 1).bit_length()
        push_word, push_keep, push_last, push_valid = push
        n = chunk(m, shape, row.wide, "chunk", row.at, row.lane, row.left)
        block = Signal(8 * width)
        response = self.read.response.payload
        read = response.block[: 8 * width]  # the port's block is the engine's transfer_bytes
        m.d.comb += block.eq(Cat(Mux(row.wide, read[:8], response.data), read[8:]))
        placed = block
        if block_bits:
            rotation = Signal(block_bits)
            m.d.comb += rotation.eq(row.lane[:block_bits] - Mux(row.wide, row.at[:block_bits], 0))
            for b in range(block_bits):  # left, one 2:1 stage a bit
                step = 8 << b
                placed = Mux(rotation[b], Cat(placed[-step:], placed[:-step]), placed)
        chosen = Signal(word_bytes)
        packed = Signal(8 * word_bytes)
        for i in range(word_bytes):
            m.d.comb += [
                chosen[i].eq((row.lane <= i) & (i < row.lane + n)),
                packed.word_select(i, 8).eq(
                    Mux(chosen[i], placed.word_select(i % width, 8), word.word_select(i, 8))
                ),
            ]
        with m.If(self.read.response.valid):
            m.d.sync += [
                word.eq(packed),
                row.at.eq(row.at + n),
                row.left.eq(row.left - n),
                row.lane.eq(row.lane + n),
                keep.eq(keep | chosen),
            ]
            with m.If((row.left == n) | (row.lane + n == word_bytes)):
                m.d.comb += receive_word_done.eq(1)
                m.d.sync += [
                    push_word.eq(packed),
                    push_keep.eq(keep | chosen),
                    push_last.eq(row.left == n),
                    push_valid.eq(1),
                    keep.eq(0),
                    row.lane.eq(0),
                ]

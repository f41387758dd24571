"""The on-device sequencer of resident mode: walks a command list in DRAM (issue 12).

Given ``program_addr`` and a ``start`` pulse, it fetches one :data:`fpga.resident.COMMAND_RECORD`
(32 bytes) at a time through a DMA reader and executes it:

- **LOAD**: per row, a DMA read of ``length`` bytes at ``dram_addr + r * dram_stride``; the
  lane-aligned words (``hw.soc.dma``) are taken apart into one byte per cycle on the buffer write
  port (``write_en/space/addr/data``, ``write_ready``: the shape the link drives today, so the
  SoC routes HUFFMAN_TABLE/HUFFMAN_STREAM to the on-chip decoder the same way);
- **STORE**: per row, a DMA write request, then the buffer read port (``read_en/space/addr`` ->
  ``read_valid/read_data`` one cycle later, the engine's) is read one byte per cycle, packed
  into lane-aligned words (byte ``a`` of DRAM in lane ``a % word_bytes``) and handed to the DMA
  writer; the row ends when the writer's ``busy`` falls (a later LOAD of the same bytes is
  ordered after it on the one native port);
- **LOAD with the WINDOWS flag** (conv1's im2col: rows that overlap in DRAM): the span
  ``(count - 1) * dram_stride + length`` (at most ``window_bytes``) is read once, word by word,
  into an on-chip window buffer, and the rows are cut from it at one byte per cycle (one DMA
  latency per command instead of one per row);
- **RUN**: one ``engine_start`` pulse, then wait for ``engine_done`` (``engine_cycles`` counts
  the wait);
- **END**: ``done`` pulses with ``error`` low; ``cycles`` holds the cycles since ``start``.

Refusals end in ``done`` with ``error`` high and an :class:`SequencerError` code (``pc`` holds
the failing command's address), never in a hang: an unknown opcode (0 included: zeroed DRAM), a
fetch or a row outside ``[0, dram_size)``, unknown flags or a WINDOWS span beyond the window
buffer, a row outside its buffer space (sizes from
:func:`fpga.spec.commands.buffer_sizes`), an unknown space, a program address that is not
word-aligned, an engine error. Rows before a refused row of the same command have moved.

A program's own LOADs/STOREs and its RUNs do not overlap (double buffering is in
docs/resident.md), but the link's transfers do: a command the link submits (``submit`` ..
``submit_taken``) runs alone when idle, and during a program between two of its commands or
while a RUN's engine computes (the engine's done is latched meanwhile), then the program goes
on; ``submit_done``/``submit_error`` answer it, ``done``/``error_code`` the program, and
``host_cycles`` counts the run's cycles spent on the link's commands. Commands flagged
``Flag.INPUT``/``Flag.OUTPUT`` address DRAM relative to ``input_base``/``output_base`` (the
run's slots, so the host fills the next image's input while this one runs). The record's
``data.StructLayout`` is derived from :func:`fpga.spec.commands.command_fields`.

Size (7-series LUTs): a row's counters are as wide as the DRAM and the largest buffer space
need (a row is checked before any of its bytes move; addresses past the range keep one
out-of-range bit, so every refusal stays exact), the byte lanes go through 2:1 shifter stages,
and the word being taken apart or packed is one more word of the window buffer's LUTRAM.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import (
    COMMAND_BYTES,
    WINDOW_BYTES,
    Flag,
    HostSpace,
    Opcode,
    buffer_address_bits,
    buffer_sizes,
    command_fields,
)
from fpga.spec.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.spec.layout import BYTE_SPACES, BufferSpace, transfer_bytes
from hw.soc.dma import request_layout, words_layout


def command_layout() -> data.StructLayout:
    """One command record, LSB first, as :data:`fpga.resident.COMMAND_RECORD` packs it."""
    return data.StructLayout(dict(command_fields()))


class SequencerError(enum.Enum, shape=3):
    NONE = 0
    OPCODE = 1  # unknown opcode
    DRAM_RANGE = 2  # a fetch or a row outside [0, dram_size)
    BUFFER_RANGE = 3  # a row outside its buffer space
    SPACE = 4  # unknown buffer space
    ALIGNMENT = 5  # program address not a multiple of the DRAM word
    ENGINE = 6  # the engine flagged an error during a RUN
    FLAGS = 7  # unknown flags, or a WINDOWS LOAD spanning more than the window buffer


class Sequencer(wiring.Component):
    """See the module docstring. ``data_width``/``address_width``: the DMA's native port (word
    bits, word address bits); ``dram_size``: bytes the program may address (default: all)."""

    def __init__(
        self,
        config: AcceleratorConfig = DEFAULT_CONFIG,
        data_width: int = 128,
        address_width: int = 24,
        dram_size: int | None = None,
        window_bytes: int = WINDOW_BYTES,
        host_sizes: dict | None = None,
    ):
        self.config = config
        self.window_bytes = window_bytes
        self.word_bytes = data_width // 8
        self.byte_address_width = address_width + (self.word_bytes - 1).bit_length()
        self.dram_size = 1 << self.byte_address_width if dram_size is None else dram_size
        if not 0 < self.dram_size <= 1 << self.byte_address_width:
            raise ValueError(f"dram_size {dram_size} does not fit a {address_width}-bit port")
        if (COMMAND_BYTES * 8) % data_width:
            raise ValueError(f"a {COMMAND_BYTES}-byte command is not whole {data_width}-bit words")
        self.buffer_sizes = buffer_sizes(config)
        self.transfer_bytes = min(transfer_bytes(config), self.word_bytes)
        self.host_sizes = dict(host_sizes or {})
        if any(space not in HostSpace for space in self.host_sizes):
            raise ValueError(f"host spaces must be HostSpace codes, not {list(self.host_sizes)}")
        addr_bits = buffer_address_bits(config)
        if HostSpace.LINK in self.host_sizes:
            addr_bits = max(addr_bits, (self.host_sizes[HostSpace.LINK] - 1).bit_length())
        space_bits = max(HostSpace).bit_length()
        fields = dict(command_fields())
        super().__init__(
            {
                "start": In(1),
                "program_addr": In(fields["dram_addr"]),
                # the run's slots: INPUT / OUTPUT-flagged commands address DRAM relative to them
                "input_base": In(fields["dram_addr"]),
                "output_base": In(fields["dram_addr"]),
                # one command from the host side (hw.soc.link): LOAD/STORE only, the only commands
                # that may name a HostSpace; held until ``submit_taken``, executed alone when
                # idle, or between two program commands / while a RUN's engine computes;
                # ``submit_done`` pulses when it ends, ``submit_error`` its SequencerError
                "submit": In(1),
                "command": In(command_layout()),
                "submit_taken": Out(1),
                "submit_done": Out(1),
                "submit_error": Out(SequencerError),
                "dma_wait_cycles": Out(32),
                "host_cycles": Out(32),  # a run's cycles spent on submitted commands
                "busy": Out(1),
                "running": Out(1),  # a program runs (start .. its done)
                "done": Out(1),  # the program's end (END or a refusal)
                "error": Out(1),
                "error_code": Out(SequencerError),
                "pc": Out(fields["dram_addr"]),
                "cycles": Out(32),
                "engine_cycles": Out(32),
                # DMA (hw.soc.dma.DMA's read_request/read_data/write_request/write_data/write_busy)
                "dma_read_request": Out(stream.Signature(request_layout(self.byte_address_width))),
                "dma_read_data": In(stream.Signature(words_layout(data_width))),
                "dma_write_request": Out(stream.Signature(request_layout(self.byte_address_width))),
                "dma_write_data": Out(stream.Signature(words_layout(data_width))),
                "dma_write_busy": In(1),
                # the engine's buffer ports and run handshake
                # chunks (hw.engine.engine.ConvEngine's ports): ``write_count`` bytes at
                # ``write_addr`` inside one aligned block of transfer_bytes, lane 0 first;
                # BYTE_SPACES and the HostSpaces get one byte per cycle
                "write_en": Out(1),
                "write_space": Out(space_bits),
                "write_addr": Out(addr_bits),
                "write_data": Out(8 * self.transfer_bytes),
                "write_count": Out(range(self.transfer_bytes + 1)),
                "write_ready": In(1),
                "read_en": Out(1),
                "read_space": Out(space_bits),
                "read_addr": Out(addr_bits),
                "read_valid": In(1),
                "read_data": In(8),  # the byte at read_addr (one cycle later)
                "read_block": In(8 * self.transfer_bytes),  # its aligned block (ACT_OUT)
                "engine_start": Out(1),
                "engine_done": In(1),
                "engine_error": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        word_bytes = self.word_bytes
        lane_bits = max(1, (word_bytes - 1).bit_length())
        fetch_words = COMMAND_BYTES // word_bytes
        layout = command_layout()
        fields = dict(command_fields())
        dram_bits = self.byte_address_width
        addr_bits = len(self.write_addr)
        # widths from the config: a row is checked against the DRAM and its buffer space before
        # any of its bytes move, so the counters of a row's bytes only reach the larger of them
        sizes = {**self.buffer_sizes, **self.host_sizes}
        buffer_bits = max(addr_bits, (max(sizes.values()) - 1).bit_length(), 1)
        row_bytes = min(self.dram_size, max(sizes.values()))  # the longest row that passes

        record = Signal(layout)
        fetched = Signal(range(fetch_words + 1))
        pc = Signal(fields["dram_addr"])
        cycles = Signal(32)
        engine_cycles = Signal(32)
        dma_wait_cycles = Signal(32)
        host_cycles = Signal(32)
        dma_wait = Signal()  # this cycle waits for the DMA (a request, read data, write drain)
        immediate = Signal()  # the command came from ``submit``, not from DRAM
        running = Signal()  # a program runs (a submitted command may interleave)
        engine_busy = Signal()  # a RUN's engine computes (from its start to its done)
        host_code = Signal(SequencerError)  # the submitted command's refusal
        rows_left = Signal(fields["count"])  # also counts the span's strides (SPAN)
        # the row's DRAM and buffer addresses modulo 2^dram_bits / 2^buffer_bits; ``*_over``: the
        # true address is at or past that (then the row is refused: both are the whole range)
        row_dram = Signal(dram_bits)
        dram_over = Signal()
        row_buffer = Signal(buffer_bits)
        buffer_over = Signal()
        # the row's bytes not yet handed on and the buffer address of the next (receive side;
        # the issue side of a STORE has its own)
        left = Signal(range(row_bytes + 1))
        at = Signal(addr_bits)
        issue_left = Signal(range(row_bytes + 1))
        issue_at = Signal(addr_bits)
        keep = Signal(word_bytes)
        # STORE: the finished word on its way to the DMA writer
        push_word = Signal(8 * word_bytes)
        push_keep = Signal(word_bytes)
        push_last = Signal()
        push_valid = Signal()
        lane = Signal(range(word_bytes + 1))
        issue_lane = Signal(range(word_bytes + 1))
        code = Signal(SequencerError)
        # WINDOWS LOADs: the span, read once into a word-wide window buffer
        window_words = self.window_bytes // word_bytes + 1
        # one more word after the window's (``word``): the LOAD word being taken apart, the
        # STORE word being packed (a word register's bytes, in LUTRAM; only a reset does not
        # clear it, which shows in a STORE's bytes outside ``keep`` at most)
        word_slot = window_words
        m.submodules.window = window = Memory(
            shape=unsigned(8 * word_bytes), depth=window_words + 1, init=[]
        )
        window_fill = window.write_port()
        window_peek = window.read_port(domain="comb")
        word = window_peek.data  # with the read address at word_slot
        m.d.comb += [
            window_fill.addr.eq(word_slot),
            window_fill.data.eq(self.dma_read_data.payload.data),
            window_peek.addr.eq(word_slot),
        ]
        # the span so far, saturated at all ones (only compared with window_bytes until it fits)
        span = Signal(self.window_bytes.bit_length())
        filled = Signal(range(window_words + 1))
        # byte offsets into the window buffer (its first word holds the command's dram_addr):
        # of the row, and of the row's next byte
        window_row = Signal(range(self.window_bytes + word_bytes))
        window_at = Signal(range(self.window_bytes + word_bytes))
        windows = (record.flags & int(Flag.WINDOWS)) != 0
        # relocation: an INPUT / OUTPUT-flagged command's dram_addr is relative to the run's
        # slot (one adder: a command may not carry both flags)
        to_input = (record.flags & int(Flag.INPUT)) != 0
        to_output = (record.flags & int(Flag.OUTPUT)) != 0
        relocated = Signal(fields["dram_addr"] + 1)
        m.d.comb += relocated.eq(
            record.dram_addr + Mux(to_input, self.input_base, Mux(to_output, self.output_base, 0))
        )
        known_flags = int(Flag.WINDOWS | Flag.INPUT | Flag.OUTPUT)

        def over(value, bits):
            """``value`` does not fit ``bits`` bits."""
            return value[bits:] != 0 if len(value) > bits else Const(0)

        def saturated(value):
            return Mux(over(value, len(span)), (1 << len(span)) - 1, value[: len(span)])

        length = record.length
        space_ok = Signal()
        buffer_size = Signal(range(max(sizes.values()) + 1))
        with m.Switch(record.space):
            for space, size in self.buffer_sizes.items():
                with m.Case(space):
                    m.d.comb += [space_ok.eq(1), buffer_size.eq(size)]
            for space, size in self.host_sizes.items():
                with m.Case(space):
                    m.d.comb += [space_ok.eq(immediate), buffer_size.eq(size)]
        row_lane = row_dram[:lane_bits] if word_bytes > 1 else Const(0, 1)

        # chunks: n = min(bytes to the end of the buffer block, to the end of the DRAM word,
        # left in the row), 1 in a byte space
        width = self.transfer_bytes
        block_bits = (width - 1).bit_length()
        wide = Signal()
        m.d.comb += wide.eq(
            ((record.opcode == Opcode.LOAD) & record.space.matches(*_wide_loads()))
            | ((record.opcode == Opcode.STORE) & (record.space == BufferSpace.ACT_OUT))
        )

        def chunk(name, buffer_at, word_lane, left):
            """Bytes of the next chunk at buffer byte ``buffer_at``, DRAM lane ``word_lane``."""
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

        m.d.comb += [
            self.pc.eq(pc),
            self.cycles.eq(cycles),
            self.engine_cycles.eq(engine_cycles),
            self.dma_wait_cycles.eq(dma_wait_cycles),
            self.error_code.eq(code),
            self.error.eq(code != SequencerError.NONE),
            self.submit_error.eq(host_code),
            self.host_cycles.eq(host_cycles),
            self.running.eq(running),
            self.write_space.eq(record.space),
            self.read_space.eq(record.space),
            self.dma_read_request.payload.length.eq(length),
            self.dma_write_request.payload.length.eq(length),
            self.dma_read_request.payload.addr.eq(row_dram),
            self.dma_write_request.payload.addr.eq(row_dram),
        ]
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(immediate):
                m.d.sync += host_cycles.eq(host_cycles + 1)
        with m.If(dma_wait & ~immediate):
            m.d.sync += dma_wait_cycles.eq(dma_wait_cycles + 1)
        # the engine computes from a RUN's start to its done, whatever the sequencer does then
        with m.If(engine_busy):
            m.d.sync += engine_cycles.eq(engine_cycles + 1)
        with m.If(self.engine_done):
            m.d.sync += engine_busy.eq(0)

        # LOAD_BYTES, WINDOW_BYTES and the receive side of STORE_READ share the chunk at ``at``
        # (DRAM lane ``lane``, or ``window_at``'s), the first two the byte-lane shifter onto the
        # write port
        from_window = Signal()
        load_lane = Signal(range(word_bytes + 1))
        load_source = Signal(8 * word_bytes)
        m.d.comb += [
            load_lane.eq(Mux(from_window, window_at[:lane_bits] if word_bytes > 1 else 0, lane)),
            load_source.eq(window_peek.data),
        ]
        n = chunk("chunk", at, load_lane, left)
        loaded = load_source  # shifted right by ``load_lane`` bytes: one 2:1 stage a bit
        for b in reversed(range(lane_bits if word_bytes > 1 else 0)):
            loaded = Mux(load_lane[b], loaded >> (8 << b), loaded)
        loaded = loaded[: 8 * width]

        def fail(reason: SequencerError):
            with m.If(immediate):  # the submitted command's refusal; a program goes on
                m.d.sync += host_code.eq(reason)
                m.next = "HOST_DONE"
            with m.Else():
                m.d.sync += code.eq(reason)
                m.next = "FAIL"

        def take_submit():
            """Execute the submitted command next (the program's state waits: ``pc`` and the
            RUN's engine are untouched; HOST_DONE returns to RUN_WAIT)."""
            m.d.comb += self.submit_taken.eq(1)
            m.d.sync += [record.eq(self.command), immediate.eq(1), host_code.eq(0)]
            m.next = "DECODE"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        pc.eq(self.program_addr),
                        cycles.eq(0),
                        engine_cycles.eq(0),
                        dma_wait_cycles.eq(0),
                        host_cycles.eq(0),
                        code.eq(SequencerError.NONE),
                        immediate.eq(0),
                        running.eq(1),
                    ]
                    m.next = "FETCH"
                with m.Elif(self.submit):
                    take_submit()

            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += fetched.eq(0)
                with m.If(pc[:lane_bits] != 0 if word_bytes > 1 else Const(0)):
                    fail(SequencerError.ALIGNMENT)
                with m.Elif(pc > self.dram_size - COMMAND_BYTES):  # pc + COMMAND_BYTES > size
                    fail(SequencerError.DRAM_RANGE)
                with m.Else():
                    m.d.comb += [
                        self.dma_read_request.valid.eq(1),
                        self.dma_read_request.payload.addr.eq(pc),
                        self.dma_read_request.payload.length.eq(COMMAND_BYTES),
                        dma_wait.eq(~self.dma_read_request.ready),
                    ]
                    with m.If(self.dma_read_request.ready):
                        m.next = "FETCH_DATA"

            with m.State("FETCH_DATA"):
                m.d.comb += [self.busy.eq(1), self.dma_read_data.ready.eq(1)]
                m.d.comb += dma_wait.eq(~self.dma_read_data.valid)
                with m.If(self.dma_read_data.valid):
                    # little-endian: the first word ends up in the lowest bits
                    incoming = self.dma_read_data.payload.data
                    shifted = record.as_value() >> (8 * word_bytes)
                    top = incoming << (8 * (COMMAND_BYTES - word_bytes))
                    m.d.sync += record.eq(shifted | top)
                    m.d.sync += fetched.eq(fetched + 1)
                    with m.If(fetched == fetch_words - 1):
                        m.next = "DECODE"

            with m.State("DECODE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    rows_left.eq(record.count),
                    row_dram.eq(relocated),
                    dram_over.eq(over(relocated, dram_bits)),
                    row_buffer.eq(record.buffer_offset),
                    buffer_over.eq(over(record.buffer_offset, buffer_bits)),
                    window_row.eq(relocated[:lane_bits] if word_bytes > 1 else 0),
                ]
                with m.Switch(record.opcode):
                    with m.Case(Opcode.LOAD, Opcode.STORE):
                        with m.If((record.count == 0) | (length == 0)):
                            m.next = "NEXT"
                        with m.Elif(~space_ok):
                            fail(SequencerError.SPACE)
                        with m.Elif(
                            ((record.flags & (0xFFFF ^ known_flags)) != 0)
                            | (windows & (record.opcode != Opcode.LOAD))
                            | (to_input & to_output)
                        ):
                            fail(SequencerError.FLAGS)
                        with m.Elif(windows):
                            m.d.sync += span.eq(saturated(length))
                            m.next = "SPAN"
                        with m.Else():
                            m.next = "ROW"
                    with m.Case(Opcode.RUN):
                        with m.If(immediate):
                            fail(SequencerError.OPCODE)
                        with m.Else():
                            m.next = "RUN"
                    with m.Case(Opcode.END):
                        with m.If(immediate):
                            fail(SequencerError.OPCODE)
                        with m.Else():
                            m.next = "END"
                    with m.Default():
                        fail(SequencerError.OPCODE)

            with m.State("ROW"):  # check the row, then request it
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    left.eq(length),
                    at.eq(row_buffer),
                    issue_left.eq(length),
                    issue_at.eq(row_buffer),
                    keep.eq(0),
                    lane.eq(row_lane),
                    issue_lane.eq(row_lane),
                ]
                with m.If(dram_over | (row_dram + length > self.dram_size)):
                    fail(SequencerError.DRAM_RANGE)
                with m.Elif(buffer_over | (row_buffer + length > buffer_size)):
                    fail(SequencerError.BUFFER_RANGE)
                with m.Elif(record.opcode == Opcode.LOAD):
                    m.d.comb += self.dma_read_request.valid.eq(1)
                    m.d.comb += dma_wait.eq(~self.dma_read_request.ready)
                    with m.If(self.dma_read_request.ready):
                        m.next = "LOAD_WORD"
                with m.Else():
                    m.d.comb += self.dma_write_request.valid.eq(1)
                    m.d.comb += dma_wait.eq(~self.dma_write_request.ready)
                    with m.If(self.dma_write_request.ready):
                        m.next = "STORE_READ"

            # -- LOAD: DMA words -> one byte per cycle on the buffer write port --------------
            # (``lane``: the row's first word starts at its address' lane, the next at 0)
            with m.State("LOAD_WORD"):
                m.d.comb += [self.busy.eq(1), self.dma_read_data.ready.eq(1)]
                m.d.comb += dma_wait.eq(~self.dma_read_data.valid)
                with m.If(self.dma_read_data.valid):
                    m.d.comb += window_fill.en.eq(1)
                    m.next = "LOAD_BYTES"

            with m.State("LOAD_BYTES"):
                m.d.comb += [
                    self.busy.eq(1),
                    self.write_en.eq(1),
                    self.write_addr.eq(at),
                    self.write_data.eq(loaded),
                    self.write_count.eq(n),
                ]
                with m.If(self.write_ready):
                    m.d.sync += [at.eq(at + n), left.eq(left - n), lane.eq(lane + n)]
                    with m.If(left == n):
                        m.next = "ROW_DONE"
                    with m.Elif(lane + n == word_bytes):
                        # the word's last byte: take the next word in the same cycle if it is
                        # there (no bubble between words), else wait for it
                        m.d.sync += lane.eq(0)
                        m.d.comb += self.dma_read_data.ready.eq(1)
                        with m.If(self.dma_read_data.valid):
                            m.d.comb += window_fill.en.eq(1)
                        with m.Else():
                            m.next = "LOAD_WORD"

            # -- STORE: buffer reads (pipelined, one byte per cycle) -> DMA words ------------
            with m.State("STORE_READ"):
                # reads (one chunk a cycle, answered a cycle later) are packed into DRAM words;
                # a finished word moves to the push register and goes to the DMA writer while
                # the next word's chunks are read (one cycle a chunk when the writer keeps up)
                m.d.comb += self.busy.eq(1)
                receive_word_done = Signal()
                push_taken = push_valid & self.dma_write_data.ready
                m.d.comb += [
                    self.dma_write_data.valid.eq(push_valid),
                    self.dma_write_data.payload.data.eq(push_word),
                    self.dma_write_data.payload.keep.eq(push_keep),
                    self.dma_write_data.payload.last.eq(push_last),
                    dma_wait.eq(push_valid & ~self.dma_write_data.ready),
                ]
                with m.If(push_taken):
                    m.d.sync += push_valid.eq(0)
                    with m.If(push_last):
                        m.next = "STORE_NEXT"
                # issue side: the next chunk to read. A chunk that finishes a word is read only
                # when the push register will be free when it arrives (no stall: a read's
                # answer cannot wait)
                issue_n = chunk("issue_chunk", issue_at, issue_lane, issue_left)
                issue_word_done = (issue_left == issue_n) | (issue_lane + issue_n == word_bytes)
                push_free = ~receive_word_done & (~push_valid | push_taken)
                can_issue = (issue_left != 0) & (~issue_word_done | push_free)
                m.d.comb += [
                    self.read_en.eq(can_issue),
                    self.read_addr.eq(issue_at),
                ]
                with m.If(can_issue):
                    m.d.sync += [
                        issue_at.eq(issue_at + issue_n),
                        issue_left.eq(issue_left - issue_n),
                        issue_lane.eq(Mux(issue_word_done, 0, issue_lane + issue_n)),
                    ]
                # receive side: the same chunk sequence at ``at``, placed at DRAM lane ``lane``
                # byte ``j`` of the chunk (block byte ``at % width + j``, or read_data alone in
                # a byte space) goes to word byte ``lane + j``: one rotation of the block by
                # ``lane - at`` (mod width) puts every block byte on its word byte mod width
                block = Signal(8 * width)
                m.d.comb += block.eq(
                    Cat(Mux(wide, self.read_block[:8], self.read_data), self.read_block[8:])
                )
                placed = block
                if block_bits:
                    rotation = Signal(block_bits)
                    m.d.comb += rotation.eq(lane[:block_bits] - Mux(wide, at[:block_bits], 0))
                    for b in range(block_bits):  # left, one 2:1 stage a bit
                        step = 8 << b
                        placed = Mux(rotation[b], Cat(placed[-step:], placed[:-step]), placed)
                chosen = Signal(word_bytes)
                for i in range(word_bytes):
                    m.d.comb += chosen[i].eq((lane <= i) & (i < lane + n))
                with m.If(self.read_valid):
                    m.d.comb += window_fill.en.eq(1)
                    for i in range(word_bytes):
                        m.d.comb += window_fill.data.word_select(i, 8).eq(
                            Mux(chosen[i], placed.word_select(i % width, 8), word.word_select(i, 8))
                        )
                    m.d.sync += [at.eq(at + n), left.eq(left - n), lane.eq(lane + n)]
                    m.d.sync += keep.eq(keep | chosen)
                    with m.If((left == n) | (lane + n == word_bytes)):
                        m.d.comb += receive_word_done.eq(1)
                        m.d.sync += [
                            push_word.eq(window_fill.data),
                            push_keep.eq(keep | chosen),
                            push_last.eq(left == n),
                            push_valid.eq(1),
                            keep.eq(0),
                            lane.eq(0),
                        ]

            with m.State("STORE_NEXT"):  # the row's last word is out: wait until DRAM has it all
                m.d.comb += [self.busy.eq(1), dma_wait.eq(self.dma_write_busy)]
                with m.If(~self.dma_write_busy):
                    m.next = "ROW_DONE"

            # -- WINDOWS LOAD: the span once into the window buffer, rows cut from it ----------
            with m.State("SPAN"):  # span = (count - 1) * dram_stride + length, without a multiplier
                m.d.comb += self.busy.eq(1)
                m.d.sync += filled.eq(0)
                with m.If(span > self.window_bytes):
                    fail(SequencerError.FLAGS)
                with m.Elif(rows_left != 1):
                    m.d.sync += [
                        span.eq(saturated(span + record.dram_stride)),
                        rows_left.eq(rows_left - 1),
                    ]
                with m.Elif(dram_over | (row_dram + span > self.dram_size)):
                    fail(SequencerError.DRAM_RANGE)
                with m.Else():
                    m.d.comb += [
                        self.dma_read_request.valid.eq(1),
                        self.dma_read_request.payload.length.eq(span),
                        dma_wait.eq(~self.dma_read_request.ready),
                    ]
                    with m.If(self.dma_read_request.ready):
                        m.d.sync += rows_left.eq(record.count)  # now the rows
                        m.next = "WINDOW_FILL"

            with m.State("WINDOW_FILL"):
                m.d.comb += [
                    self.busy.eq(1),
                    self.dma_read_data.ready.eq(1),
                    window_fill.addr.eq(filled),
                    window_fill.data.eq(self.dma_read_data.payload.data),
                    window_fill.en.eq(self.dma_read_data.valid),
                    dma_wait.eq(~self.dma_read_data.valid),
                ]
                with m.If(self.dma_read_data.valid):
                    m.d.sync += filled.eq(filled + 1)
                    with m.If(self.dma_read_data.payload.last):
                        m.next = "WINDOW_ROW"

            with m.State("WINDOW_ROW"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [left.eq(length), at.eq(row_buffer), window_at.eq(window_row)]
                with m.If(buffer_over | (row_buffer + length > buffer_size)):
                    fail(SequencerError.BUFFER_RANGE)
                with m.Else():
                    m.next = "WINDOW_BYTES"

            with m.State("WINDOW_BYTES"):
                m.d.comb += [
                    self.busy.eq(1),
                    from_window.eq(1),
                    window_peek.addr.eq(window_at[lane_bits:] if word_bytes > 1 else window_at),
                    self.write_en.eq(1),
                    self.write_addr.eq(at),
                    self.write_data.eq(loaded),
                    self.write_count.eq(n),
                ]
                with m.If(self.write_ready):
                    m.d.sync += [at.eq(at + n), left.eq(left - n), window_at.eq(window_at + n)]
                    with m.If((left == n) & (rows_left == 1)):
                        m.next = "NEXT"
                    with m.Elif(left == n):
                        # the row's last chunk: the next row starts in the next cycle (what
                        # ROW_DONE and WINDOW_ROW do, in this cycle: one cycle a window, not 3)
                        step_buffer = row_buffer + record.buffer_stride[:buffer_bits]
                        step_over = over(step_buffer, buffer_bits) | over(
                            record.buffer_stride, buffer_bits
                        )
                        step_window = window_row + record.dram_stride
                        m.d.sync += [
                            rows_left.eq(rows_left - 1),
                            row_buffer.eq(step_buffer),
                            buffer_over.eq(step_over),
                            window_row.eq(step_window),
                            left.eq(length),
                            at.eq(step_buffer),
                            window_at.eq(step_window),
                        ]
                        with m.If(step_over | (step_buffer + length > buffer_size)):
                            fail(SequencerError.BUFFER_RANGE)

            with m.State("ROW_DONE"):
                m.d.comb += self.busy.eq(1)
                next_dram = row_dram + record.dram_stride[:dram_bits]
                next_buffer = row_buffer + record.buffer_stride[:buffer_bits]
                m.d.sync += [
                    rows_left.eq(rows_left - 1),
                    row_dram.eq(next_dram),
                    dram_over.eq(over(next_dram, dram_bits) | over(record.dram_stride, dram_bits)),
                    row_buffer.eq(next_buffer),
                    buffer_over.eq(
                        over(next_buffer, buffer_bits) | over(record.buffer_stride, buffer_bits)
                    ),
                    window_row.eq(window_row + record.dram_stride),
                ]
                with m.If(rows_left == 1):
                    m.next = "NEXT"
                with m.Elif(windows):
                    m.next = "WINDOW_ROW"
                with m.Else():
                    m.next = "ROW"

            # -- RUN ---------------------------------------------------------------------------
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), self.engine_start.eq(1)]
                m.d.sync += engine_busy.eq(1)
                m.next = "RUN_WAIT"

            with m.State("RUN_WAIT"):  # the link's transfers go on while the engine computes
                m.d.comb += self.busy.eq(1)
                with m.If(self.engine_error):
                    fail(SequencerError.ENGINE)
                with m.Elif(self.engine_done | ~engine_busy):
                    m.next = "NEXT"
                with m.Elif(self.submit):
                    take_submit()

            with m.State("NEXT"):
                m.d.comb += self.busy.eq(1)
                with m.If(immediate):
                    m.next = "HOST_DONE"
                with m.Elif(self.submit):  # between two program commands
                    take_submit()
                with m.Else():
                    m.d.sync += pc.eq(pc + COMMAND_BYTES)
                    m.next = "FETCH"

            with m.State("HOST_DONE"):  # back to the program, if one runs
                m.d.comb += [self.busy.eq(1), self.submit_done.eq(1)]
                m.d.sync += immediate.eq(0)
                with m.If(running):
                    m.next = "RUN_WAIT"  # the engine's RUN, or straight on to NEXT
                with m.Else():
                    m.next = "IDLE"

            with m.State("END"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.d.sync += running.eq(0)
                m.next = "IDLE"

            with m.State("FAIL"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.d.sync += [running.eq(0), engine_busy.eq(0)]
                m.next = "IDLE"
        return m


def _wide_loads() -> tuple:
    """The buffer spaces a LOAD writes in chunks (every BufferSpace not in BYTE_SPACES)."""
    return tuple(space for space in BufferSpace if space not in BYTE_SPACES)


def connect_dma(m, sequencer: Sequencer, dma) -> None:
    """Join the sequencer's DMA side to a ``hw.soc.dma.DMA`` (its streams and the writer's busy)."""
    wiring.connect(m, sequencer.dma_read_request, dma.read_request)
    wiring.connect(m, dma.read_data, sequencer.dma_read_data)
    wiring.connect(m, sequencer.dma_write_request, dma.write_request)
    wiring.connect(m, sequencer.dma_write_data, dma.write_data)
    m.d.comb += sequencer.dma_write_busy.eq(dma.write_busy)

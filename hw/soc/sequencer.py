"""The on-device sequencer of resident mode: walks a command list in DRAM (issue 12).

Given ``program_addr`` and a ``start`` pulse, it fetches one :data:`fpga.resident.COMMAND_RECORD`
(32 bytes) at a time through a DMA reader and executes it. It is three parts, one job each:

- the **command FSM** (:class:`Sequencer`): fetch, decode, relocation, every check and refusal,
  RUN, END, the link's ``submit``, the counters; it walks a LOAD's or STORE's rows, checks each
  before any of its bytes move, and asks a mover for it; ``busy`` is "the FSM is not IDLE";
- the **load mover** (:class:`hw.soc.movers.LoadMover`, DRAM -> the buffer write port): its
  ``request`` stream (a ``data.StructLayout`` row: DRAM ``addr``/``length``, buffer ``buffer``/
  ``space``, ``wide``, ``fill``) is one DMA read, whose lane-aligned words (``hw.soc.dma``) are
  taken apart into chunks on the write port (``write_en/space/addr/data/count``,
  ``write_ready``: the shape the link drives, so the SoC routes HUFFMAN_TABLE/HUFFMAN_STREAM to
  the on-chip decoder the same way), or with ``fill`` a WINDOWS span read into its window
  buffer; its ``window`` stream is one row cut from that buffer;
- the **store mover** (:class:`hw.soc.movers.StoreMover`, the buffer read port -> DRAM): its
  ``request`` stream is one DMA write: the buffer read port (``read_en/space/addr`` ->
  ``read_valid/read_data`` one cycle later, the engine's) is read one chunk a cycle, packed into
  lane-aligned words (byte ``a`` of DRAM in lane ``a % word_bytes``) and handed to the DMA
  writer; the row ends when the writer's ``busy`` falls (a later LOAD of the same bytes is
  ordered after it on the one native port).

A mover takes a request in the cycle it is offered (with the DMA's request) and pulses ``done``
in the cycle the row ends, so a row costs the FSM what the mover spends on it. The DMA reader is
the fetch's in FETCH/FETCH_DATA and the load mover's otherwise. Commands:

- **LOAD** / **STORE**: per row, ``length`` bytes at ``dram_addr + r * dram_stride`` (DRAM) and
  ``buffer_offset + r * buffer_stride`` (buffer), one mover request a row; a LOAD's rows are
  pipelined: the next row is checked and asked for as soon as the load mover takes the one
  before (its DMA read goes out while the earlier rows' words still come back), and the command
  ends when the mover's ``busy`` falls (all its rows written); a STORE's row ends before the
  next is asked for, unless the program's STORE is flagged POSTED: then each row is asked for
  when the store mover is free and the command ends when it has taken the last, so the
  commands after it go on while it moves; a LOAD row, a WINDOWS span or a
  fetch that meets the DRAM bytes of the STORE row under way (or a LOAD into its space) waits
  for it, and so do RUN (the run would overwrite ACT_OUT under it), END and a refusal; a
  submitted STORE (the link's buffer) ends with its last row;
- **LOAD with the WINDOWS flag** (conv1's im2col: rows that overlap in DRAM): the span
  ``(count - 1) * dram_stride + length`` (at most ``window_bytes``) is read once, word by word,
  into the load mover's window buffer, and the rows are cut from it at one chunk per cycle (one
  DMA latency per command instead of one per row; the next row is checked and asked for in the
  cycle the last chunk of the one before goes);
- **RUN**: once the run under way (a SPLIT one) has ended, one ``engine_start`` pulse with the
  RUN's flags on ``engine_flags``; a SPLIT run goes on to the next command at once (double
  buffering: the engine owns only its halves, :func:`fpga.spec.commands.run_claims`), any other
  waits for ``engine_done`` (``engine_cycles`` counts the cycles the engine computes);
- **WAIT**: wait for the run under way to end (link transfers are served meanwhile);
- **END**: after the run under way, ``done`` pulses with ``error`` low; ``cycles`` holds the
  cycles since ``start``.

Refusals end in ``done`` with ``error`` high and an :class:`SequencerError` code (``pc`` holds
the failing command's address), never in a hang: an unknown opcode (0 included: zeroed DRAM), a
fetch or a row outside ``[0, dram_size)``, flags outside :data:`fpga.spec.commands.FLAGS` for
the opcode (as :func:`fpga.compiler.check.check_commands` refuses them), INPUT and OUTPUT
together or a WINDOWS span beyond the window buffer (a LOAD/STORE of no bytes is skipped before
these), a row outside its buffer space (sizes from :func:`fpga.spec.commands.buffer_sizes`), an
unknown space, a program address that is not
word-aligned, an engine error (a bad descriptor, a SPLIT run outside its halves, or a write or
read that touches what a SPLIT run owns: seen before the next command is fetched; a refused read
of a posted STORE names that STORE in ``pc``). Rows before a
refused row of the same command have moved (a refused LOAD row waits for them to be written).

A SPLIT RUN's engine computes while the program's next LOADs/STOREs move (docs/resident.md,
"Double buffering"), and the link's transfers overlap runs too: a command the link submits
(``submit`` .. ``submit_taken``) runs alone when idle, and during a program between two of
its commands or while a RUN's engine computes (the engine's done is latched meanwhile), then
the program goes on; ``submit_done``/``submit_error`` answer it, ``done``/``error_code`` the
program, and ``host_cycles`` counts the run's cycles spent on the link's commands. Commands flagged
``Flag.INPUT``/``Flag.OUTPUT`` address DRAM relative to ``input_base``/``output_base`` (the
run's slots, so the host fills the next image's input while this one runs). The record's
``data.StructLayout`` is derived from :func:`fpga.spec.commands.command_fields`.

Size (7-series LUTs): a row's counters are as wide as the DRAM and the largest buffer space
need (a row is checked before any of its bytes move; addresses past the range keep one
out-of-range bit, so every refusal stays exact), the byte lanes go through 2:1 shifter stages,
the LOAD word being taken apart is one more word of the window buffer's LUTRAM and the STORE
word being packed a register of the store mover.
"""

from __future__ import annotations

from functools import partial

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import (
    COMMAND_BYTES,
    FLAGS,
    RUN_FLAG_BITS,
    WIDE_STORES,
    WINDOW_BYTES,
    Flag,
    HostSpace,
    Opcode,
    buffer_sizes,
    command_fields,
    port_address_bits,
)
from fpga.spec.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.spec.layout import BYTE_SPACES, BufferSpace, transfer_bytes
from hw.engine.ports import read_signature, write_signature
from hw.soc.dma import request_layout, words_layout
from hw.soc.movers import LoadMover, PortShape, StoreMover, over


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
    FLAGS = 7  # flags outside FLAGS[opcode], INPUT with OUTPUT, a WINDOWS span too long


#: the members of :func:`control_signature`, in the order the sequencer takes them
CONTROL = (
    "start", "program_addr", "input_base", "output_base", "submit", "command",
    "submit_taken", "submit_done", "submit_error", "running", "host_cycles", "done",
    "error_code", "pc", "cycles", "engine_cycles", "dma_wait_cycles",
)  # fmt: skip


def control_signature() -> wiring.Signature:
    """The sequencer's control as its owner drives it (``Out``; the resident model state of
    ``hw.soc.link``): a program's start, address and slots; one submitted command (held until
    ``submit_taken``, ``submit_done`` pulses when it ends, ``submit_error`` its error); the
    program's state and counters."""
    address = dict(command_fields())["dram_addr"]
    return wiring.Signature(
        {
            "start": Out(1),
            "program_addr": Out(address),
            # the run's slots: INPUT / OUTPUT-flagged commands address DRAM relative to them
            "input_base": Out(address),
            "output_base": Out(address),
            # one command from the host side: LOAD/STORE only, the only commands that may name
            # a HostSpace; executed alone when idle, or between two program commands / while
            # a RUN's engine computes
            "submit": Out(1),
            "command": Out(command_layout()),
            "submit_taken": In(1),
            "submit_done": In(1),
            "submit_error": In(SequencerError),
            "running": In(1),  # a program runs (start .. its done)
            "host_cycles": In(32),  # a run's cycles spent on submitted commands
            "done": In(1),  # the program's end (END or a refusal)
            "error_code": In(SequencerError),
            "pc": In(address),
            "cycles": In(32),
            "engine_cycles": In(32),
            "dma_wait_cycles": In(32),
        }
    )


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
        link_bytes = self.host_sizes.get(HostSpace.LINK, 0)
        if link_bytes > 1 << port_address_bits(config):
            raise ValueError(f"a {link_bytes}-byte LINK space is beyond the buffer port's reach")
        super().__init__(
            {
                # the program and the submitted commands (the link's resident model drives it)
                "control": In(control_signature()),
                "busy": Out(1),
                "error": Out(1),
                # DMA (hw.soc.dma.DMA's read_request/read_data/write_request/write_data/write_busy)
                "dma_read_request": Out(stream.Signature(request_layout(self.byte_address_width))),
                "dma_read_data": In(stream.Signature(words_layout(data_width))),
                "dma_write_request": Out(stream.Signature(request_layout(self.byte_address_width))),
                "dma_write_data": Out(stream.Signature(words_layout(data_width))),
                "dma_write_busy": In(1),
                # the engine's buffer ports and run handshake
                # the buffer ports (hw.engine.ports), driven by the load and store movers
                "write": Out(write_signature(config)),
                "read": Out(read_signature(config)),
                "engine_start": Out(1),
                # the RUN's flags with engine_start (SPLIT, HIGH_*: the run's buffer halves)
                "engine_flags": Out(RUN_FLAG_BITS),
                "engine_done": In(1),
                "engine_error": In(1),
            }
        )
        # the body reads the control's members by their own names
        for name in CONTROL:
            setattr(self, name, getattr(self.control, name))

    def elaborate(self, platform):
        m = Module()
        s = _Registers(self)
        sizes = {**self.buffer_sizes, **self.host_sizes}
        shape = PortShape(
            config=self.config,
            word_bytes=self.word_bytes,
            dram_bits=self.byte_address_width,
            transfer_bytes=self.transfer_bytes,
            row_bytes=min(self.dram_size, max(sizes.values())),  # the longest row that passes
            window_bytes=self.window_bytes,
            length_shape=len(s.record.length),
        )
        m.submodules.load = load = LoadMover(shape)
        m.submodules.store = store = StoreMover(shape)
        self._decode_record(m, s)
        self._connect_movers(m, s, load, store)
        self._counters(m, s)
        with m.FSM() as fsm:
            self._command_states(m, s)
            self._row_states(m, s, load, store)
            self._window_states(m, s, load)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    def _decode_record(self, m, s):
        """What the FSM reads off the record: the relocated DRAM address, the space's size, the
        flags the opcode may carry (:data:`fpga.spec.commands.FLAGS`), the chunked spaces."""
        record = s.record
        # relocation: an INPUT / OUTPUT-flagged command's dram_addr is relative to the run's
        # slot (one adder: a command may not carry both flags)
        to_input = (record.flags & int(Flag.INPUT)) != 0
        to_output = (record.flags & int(Flag.OUTPUT)) != 0
        m.d.comb += s.relocated.eq(
            record.dram_addr + Mux(to_input, self.input_base, Mux(to_output, self.output_base, 0))
        )
        allowed = Signal.like(record.flags, name="allowed_flags")
        with m.Switch(record.opcode):
            for opcode, flags in FLAGS.items():
                with m.Case(opcode):
                    m.d.comb += allowed.eq(int(flags))
        m.d.comb += s.bad_flags.eq(((record.flags & ~allowed) != 0) | (to_input & to_output))
        with m.Switch(record.space):
            for space, size in self.buffer_sizes.items():
                with m.Case(space):
                    m.d.comb += [s.space_ok.eq(1), s.buffer_size.eq(size)]
            for space, size in self.host_sizes.items():
                with m.Case(space):
                    m.d.comb += [s.space_ok.eq(s.immediate), s.buffer_size.eq(size)]
        m.d.comb += s.wide.eq(
            ((record.opcode == Opcode.LOAD) & record.space.matches(*_wide_loads()))
            | ((record.opcode == Opcode.STORE) & record.space.matches(*WIDE_STORES))
        )

    def _connect_movers(self, m, s, load, store):
        """The movers' buffer ports are the sequencer's; the DMA reader is the command fetch's
        in FETCH/FETCH_DATA and the load mover's otherwise; a request's row is the FSM's."""
        wiring.connect(m, load.write, wiring.flipped(self.write))
        wiring.connect(m, store.read, wiring.flipped(self.read))
        m.d.comb += [
            s.dma_wait.eq(s.fetch_wait | load.dma_wait | store.dma_wait),
            s.store_busy.eq(store.busy),
            s.load_busy.eq(load.busy),
        ]
        read_request, read_data = self.dma_read_request, self.dma_read_data
        m.d.comb += [
            read_request.valid.eq(s.fetch_request | load.dma_read_request.valid),
            load.dma_read_request.ready.eq(read_request.ready),
            load.dma_read_data.valid.eq(read_data.valid),
            load.dma_read_data.payload.eq(read_data.payload),
            read_data.ready.eq(s.fetch_data | load.dma_read_data.ready),
        ]
        with m.If(s.fetch_request):
            m.d.comb += [
                read_request.payload.addr.eq(s.pc),
                read_request.payload.length.eq(COMMAND_BYTES),
            ]
        with m.Else():
            m.d.comb += read_request.payload.eq(load.dma_read_request.payload)
        wiring.connect(m, wiring.flipped(self.dma_write_request), store.dma_write_request)
        wiring.connect(m, wiring.flipped(self.dma_write_data), store.dma_write_data)
        m.d.comb += store.dma_write_busy.eq(self.dma_write_busy)
        # the row the FSM asks for (SPAN and WINDOWS replace some of it)
        record = s.record
        target = [s.row_buffer, record.space, s.wide]
        for request in (load.request.payload, store.request.payload):
            m.d.comb += [request.addr.eq(s.row_dram), request.length.eq(record.length)]
            m.d.comb += [request.buffer.eq(target[0]), request.space.eq(target[1])]
            m.d.comb += request.wide.eq(target[2])
        window = load.window.payload
        m.d.comb += [window.offset.eq(s.window_row), window.length.eq(record.length)]
        m.d.comb += [window.buffer.eq(target[0]), window.space.eq(target[1])]
        m.d.comb += window.wide.eq(target[2])

    def _counters(self, m, s):
        m.d.comb += [
            self.pc.eq(s.pc),
            self.cycles.eq(s.cycles),
            self.engine_cycles.eq(s.engine_cycles),
            self.dma_wait_cycles.eq(s.dma_wait_cycles),
            self.error_code.eq(s.code),
            self.error.eq(s.code != SequencerError.NONE),
            self.submit_error.eq(s.host_code),
            self.host_cycles.eq(s.host_cycles),
            self.running.eq(s.running),
        ]
        with m.If(s.running):
            m.d.sync += s.cycles.eq(s.cycles + 1)
            with m.If(s.immediate):
                m.d.sync += s.host_cycles.eq(s.host_cycles + 1)
        # DMA waits the engine does not hide (none while it computes), so that every cycle of a
        # program is engine, DMA wait or other, overlapped or not
        with m.If(s.dma_wait & ~s.immediate & ~s.engine_busy):
            m.d.sync += s.dma_wait_cycles.eq(s.dma_wait_cycles + 1)
        # the engine computes from a RUN's start to its done, whatever the sequencer does then
        with m.If(s.engine_busy):
            m.d.sync += s.engine_cycles.eq(s.engine_cycles + 1)
        with m.If(self.engine_done):
            m.d.sync += s.engine_busy.eq(0)
        m.d.sync += s.error_seen.eq(self.engine_error)
        with m.If(self.engine_error & ~s.error_seen & s.store_busy & ~s.load_busy):
            m.d.sync += s.store_fault.eq(1)

    def _fail(self, m, s, reason: SequencerError):
        with m.If(s.immediate):  # the submitted command's refusal; a program goes on
            m.d.sync += s.host_code.eq(reason)
            m.next = "HOST_DONE"
        with m.Else():
            m.d.sync += s.code.eq(reason)
            if reason == SequencerError.ENGINE:
                with m.If(s.store_fault):
                    m.d.sync += s.pc.eq(s.store_pc)
            m.next = "FAIL"

    def _take_submit(self, m, s):
        """Execute the submitted command next (the program's state waits: ``pc`` and the RUN's
        engine are untouched; HOST_DONE returns to RUN_WAIT)."""
        m.d.comb += self.submit_taken.eq(1)
        m.d.sync += [s.record.eq(self.command), s.immediate.eq(1), s.host_code.eq(0)]
        m.next = "DECODE"

    def _command_states(self, m, s):
        """Fetch, decode, RUN, END, the submitted commands, the refusals."""
        word_bytes, record = self.word_bytes, s.record
        fetch_words = COMMAND_BYTES // word_bytes
        lane_bits = max(1, (word_bytes - 1).bit_length())
        fail = partial(self._fail, m, s)
        with m.State("IDLE"):
            with m.If(self.start):
                m.d.sync += [
                    s.pc.eq(self.program_addr),
                    s.cycles.eq(0),
                    s.engine_cycles.eq(0),
                    s.dma_wait_cycles.eq(0),
                    s.host_cycles.eq(0),
                    s.code.eq(SequencerError.NONE),
                    s.immediate.eq(0),
                    s.running.eq(1),
                    s.store_fault.eq(0),
                ]
                m.next = "FETCH"
            with m.Elif(self.submit):
                self._take_submit(m, s)

        with m.State("FETCH"):
            m.d.sync += s.fetched.eq(0)
            with m.If(s.pc[:lane_bits] != 0 if word_bytes > 1 else Const(0)):
                fail(SequencerError.ALIGNMENT)
            with m.Elif(s.pc > self.dram_size - COMMAND_BYTES):  # pc + COMMAND_BYTES > size
                fail(SequencerError.DRAM_RANGE)
            with m.Elif(~_store_hazard(s, s.pc, COMMAND_BYTES)):
                m.d.comb += [
                    s.fetch_request.eq(1),
                    s.fetch_wait.eq(~self.dma_read_request.ready),
                ]
                with m.If(self.dma_read_request.ready):
                    m.next = "FETCH_DATA"

        with m.State("FETCH_DATA"):
            m.d.comb += [s.fetch_data.eq(1), s.fetch_wait.eq(~self.dma_read_data.valid)]
            with m.If(self.dma_read_data.valid):
                # little-endian: the first word ends up in the lowest bits
                incoming = self.dma_read_data.payload.data
                shifted = record.as_value() >> (8 * word_bytes)
                top = incoming << (8 * (COMMAND_BYTES - word_bytes))
                m.d.sync += [record.eq(shifted | top), s.fetched.eq(s.fetched + 1)]
                with m.If(s.fetched == fetch_words - 1):
                    m.next = "DECODE"

        with m.State("DECODE"):
            self._decode(m, s)

        with m.State("RUN"):  # one engine: a SPLIT run under way ends first
            m.d.comb += self.engine_flags.eq(record.flags[:RUN_FLAG_BITS])
            with m.If(self.engine_error):
                fail(SequencerError.ENGINE)
            # (not engine_done: the engine's done follows start); a posted STORE row reads
            # ACT_OUT until it ends
            with m.Elif(~s.engine_busy & ~s.store_busy):
                m.d.comb += self.engine_start.eq(1)
                m.d.sync += s.engine_busy.eq(1)
                with m.If((record.flags & int(Flag.SPLIT)) != 0):
                    m.next = "NEXT"  # it computes while the next commands go on
                with m.Else():
                    m.next = "RUN_WAIT"

        with m.State("RUN_WAIT"):  # (and WAIT) the link's transfers go on meanwhile
            with m.If(self.engine_error):
                fail(SequencerError.ENGINE)
            with m.Elif(self.engine_done | ~s.engine_busy):
                m.next = "NEXT"
            with m.Elif(self.submit):
                self._take_submit(m, s)

        with m.State("NEXT"):
            with m.If(s.immediate):
                m.next = "HOST_DONE"
            with m.Elif(self.engine_error):  # a SPLIT run refused what the last command did
                fail(SequencerError.ENGINE)
            with m.Elif(self.submit):  # between two program commands
                self._take_submit(m, s)
            with m.Else():
                m.d.sync += s.pc.eq(s.pc + COMMAND_BYTES)
                m.next = "FETCH"

        with m.State("HOST_DONE"):  # back to the program, if one runs
            m.d.comb += self.submit_done.eq(1)
            m.d.sync += s.immediate.eq(0)
            with m.If(s.running):
                m.next = "RUN_WAIT"  # the engine's RUN, or straight on to NEXT
            with m.Else():
                m.next = "IDLE"

        with m.State("END"):  # after the run under way and the posted STORE row
            with m.If(self.engine_error):
                fail(SequencerError.ENGINE)
            with m.Elif((~s.engine_busy | self.engine_done) & ~s.store_busy):
                m.d.comb += self.done.eq(1)
                m.d.sync += s.running.eq(0)
                m.next = "IDLE"

        with m.State("FAIL"):  # after the posted STORE row
            with m.If(~s.store_busy):
                m.d.comb += self.done.eq(1)
                m.d.sync += [s.running.eq(0), s.engine_busy.eq(0)]
                m.next = "IDLE"

    def _decode(self, m, s):
        """DECODE: the command's first row, then its checks in order (a LOAD/STORE of no bytes
        is skipped before them); the flags an opcode may carry are FLAGS's."""
        record, dram_bits = s.record, self.byte_address_width
        lane_bits = max(1, (self.word_bytes - 1).bit_length())
        fail = partial(self._fail, m, s)
        m.d.sync += [
            s.rows_left.eq(record.count),
            s.row_dram.eq(s.relocated),
            s.dram_over.eq(over(s.relocated, dram_bits)),
            s.row_buffer.eq(record.buffer_offset),
            s.buffer_over.eq(over(record.buffer_offset, len(s.row_buffer))),
            s.window_row.eq(s.relocated[:lane_bits] if self.word_bytes > 1 else 0),
        ]
        with m.Switch(record.opcode):
            with m.Case(Opcode.LOAD, Opcode.STORE):
                with m.If((record.count == 0) | (record.length == 0)):
                    m.next = "NEXT"
                with m.Elif(~s.space_ok):
                    fail(SequencerError.SPACE)
                with m.Elif(s.bad_flags):
                    fail(SequencerError.FLAGS)
                with m.Elif((record.flags & int(Flag.WINDOWS)) != 0):  # a LOAD (FLAGS)
                    m.d.sync += s.span.eq(s.saturated(record.length))
                    m.next = "SPAN"
                with m.Else():
                    m.next = "ROW"
            for opcode, state in (
                (Opcode.RUN, "RUN"),
                (Opcode.END, "END"),
                (Opcode.WAIT, "RUN_WAIT"),
            ):
                with m.Case(opcode):
                    with m.If(s.immediate):
                        fail(SequencerError.OPCODE)
                    with m.Elif(s.bad_flags):
                        fail(SequencerError.FLAGS)
                    with m.Else():
                        m.next = state
            with m.Default():
                fail(SequencerError.OPCODE)

    def _row_states(self, m, s, load, store):
        """A LOAD's or STORE's rows, each checked, then asked of its mover. A LOAD's next row is
        checked and asked for as soon as the load mover takes the one before (its DMA read goes
        out while the earlier rows' words still come back); the command ends when the mover has
        written them all. A STORE's row is moved before the next is asked for."""
        record, length = s.record, s.record.length
        dram_bits, buffer_bits = self.byte_address_width, len(s.row_buffer)
        fail = partial(self._fail, m, s)

        def advance():  # the next row's addresses; the command's last row leaves
            next_dram = s.row_dram + record.dram_stride[:dram_bits]
            next_buffer = s.row_buffer + record.buffer_stride[:buffer_bits]
            m.d.sync += [
                s.rows_left.eq(s.rows_left - 1),
                s.row_dram.eq(next_dram),
                s.dram_over.eq(over(next_dram, dram_bits) | over(record.dram_stride, dram_bits)),
                s.row_buffer.eq(next_buffer),
                s.buffer_over.eq(
                    over(next_buffer, buffer_bits) | over(record.buffer_stride, buffer_bits)
                ),
            ]

        with m.State("ROW"):  # check the row, then ask its mover for it
            # a refused row: the rows asked for before it finish moving first
            with m.If(s.dram_over | (s.row_dram + length > self.dram_size)):
                with m.If(~load.busy):
                    fail(SequencerError.DRAM_RANGE)
            with m.Elif(s.buffer_over | (s.row_buffer + length > s.buffer_size)):
                with m.If(~load.busy):
                    fail(SequencerError.BUFFER_RANGE)
            with m.Elif(record.opcode == Opcode.LOAD):
                # after the posted STORE row it reads back or whose space it writes
                with m.If(~_store_hazard(s, s.row_dram, length, record.space)):
                    m.d.comb += load.request.valid.eq(1)
                    with m.If(load.request.ready):
                        advance()
                        with m.If(s.rows_left == 1):
                            m.next = "LOAD"
            with m.Else():
                m.d.comb += store.request.valid.eq(1)
                with m.If(store.request.ready):
                    m.d.sync += [
                        s.store_lo.eq(s.row_dram),
                        s.store_hi.eq(s.row_dram + length),
                        s.store_space.eq(record.space),
                    ]
                    with m.If(~s.store_fault):
                        m.d.sync += s.store_pc.eq(s.pc)
                    posted = (record.flags & int(Flag.POSTED)) != 0
                    # the link's buffer is read until the row ends
                    with m.If(s.immediate | ~posted):
                        m.next = "STORE"
                    with m.Else():  # posted: the store mover moves it, the program goes on
                        advance()
                        with m.If(s.rows_left == 1):
                            m.next = "NEXT"

        with m.State("LOAD"):  # every row asked for: until the last is written
            with m.If(~load.busy):
                m.next = "NEXT"

        with m.State("STORE"):
            with m.If(store.done):
                advance()
                with m.If(s.rows_left == 1):
                    m.next = "NEXT"
                with m.Else():
                    m.next = "ROW"

    def _window_states(self, m, s, load):
        """A WINDOWS LOAD: its span read once into the load mover's window buffer, then its
        rows cut from it, each checked as the one before ends (one cycle a window)."""
        record, length = s.record, s.record.length
        buffer_bits = len(s.row_buffer)
        fail = partial(self._fail, m, s)
        with m.State("SPAN"):  # span = (count - 1) * dram_stride + length, without a multiplier
            with m.If(s.span > self.window_bytes):
                fail(SequencerError.FLAGS)
            with m.Elif(s.rows_left != 1):
                m.d.sync += [
                    s.span.eq(s.saturated(s.span + record.dram_stride)),
                    s.rows_left.eq(s.rows_left - 1),
                ]
            with m.Elif(s.dram_over | (s.row_dram + s.span > self.dram_size)):
                fail(SequencerError.DRAM_RANGE)
            with m.Elif(~_store_hazard(s, s.row_dram, s.span, record.space)):
                m.d.comb += [
                    load.request.valid.eq(1),
                    load.request.payload.length.eq(s.span),
                    load.request.payload.fill.eq(1),
                ]
                with m.If(load.request.ready):
                    m.d.sync += s.rows_left.eq(record.count)  # now the rows
                    m.next = "FILL"

        with m.State("FILL"):
            with m.If(load.done):
                m.next = "WINDOW_ROW"

        with m.State("WINDOW_ROW"):  # the first row
            with m.If(s.buffer_over | (s.row_buffer + length > s.buffer_size)):
                fail(SequencerError.BUFFER_RANGE)
            with m.Else():
                m.d.comb += load.window.valid.eq(1)
                with m.If(load.window.ready):
                    m.next = "WINDOWS"

        with m.State("WINDOWS"):
            with m.If(load.done & (s.rows_left == 1)):
                m.next = "NEXT"
            with m.Elif(load.done):
                # the row's last chunk: the next row is checked and asked for in this cycle
                step_buffer = s.row_buffer + record.buffer_stride[:buffer_bits]
                step_over = over(step_buffer, buffer_bits) | over(record.buffer_stride, buffer_bits)
                step_window = s.window_row + record.dram_stride
                m.d.sync += [
                    s.rows_left.eq(s.rows_left - 1),
                    s.row_buffer.eq(step_buffer),
                    s.buffer_over.eq(step_over),
                    s.window_row.eq(step_window),
                ]
                with m.If(step_over | (step_buffer + length > s.buffer_size)):
                    fail(SequencerError.BUFFER_RANGE)
                with m.Else():
                    m.d.comb += [
                        load.window.valid.eq(1),
                        load.window.payload.buffer.eq(step_buffer),
                        load.window.payload.offset.eq(step_window),
                    ]


class _Registers:
    """The command FSM's state: the record, the program counter and the run's counters, the
    current row (its DRAM and buffer addresses modulo 2^dram_bits / 2^buffer_bits; ``*_over``:
    the true address is at or past that, then the row is refused), a WINDOWS LOAD's span."""

    def __init__(self, seq: Sequencer):
        fields = dict(command_fields())
        sizes = {**seq.buffer_sizes, **seq.host_sizes}
        # a row is checked against the DRAM and its buffer space before any of its bytes move,
        # so the counters of a row's bytes only reach the larger of them
        buffer_bits = max(len(seq.write.payload.addr), (max(sizes.values()) - 1).bit_length(), 1)
        self.record = Signal(command_layout())
        self.fetched = Signal(range(COMMAND_BYTES // seq.word_bytes + 1))
        self.pc = Signal(fields["dram_addr"])
        self.cycles = Signal(32)
        self.engine_cycles = Signal(32)
        self.dma_wait_cycles = Signal(32)
        self.host_cycles = Signal(32)
        self.dma_wait = Signal()  # this cycle waits for the DMA (a request, read data, drain)
        self.fetch_request = Signal()  # FETCH asks the DMA reader for the record
        self.fetch_data = Signal()  # FETCH_DATA takes its words
        self.fetch_wait = Signal()
        self.immediate = Signal()  # the command came from ``submit``, not from DRAM
        self.running = Signal()  # a program runs (a submitted command may interleave)
        self.engine_busy = Signal()  # a RUN's engine computes (from its start to its done)
        self.code = Signal(SequencerError)
        self.host_code = Signal(SequencerError)  # the submitted command's refusal
        self.relocated = Signal(fields["dram_addr"] + 1)
        self.bad_flags = Signal()
        self.space_ok = Signal()
        self.buffer_size = Signal(range(max(sizes.values()) + 1))
        self.wide = Signal()  # the row moves in chunks (not one byte a cycle)
        self.rows_left = Signal(fields["count"])  # also counts the span's strides (SPAN)
        self.row_dram = Signal(seq.byte_address_width)
        self.dram_over = Signal()
        self.row_buffer = Signal(buffer_bits)
        self.buffer_over = Signal()
        # the span so far, saturated at all ones (only compared with window_bytes until it fits)
        self.span = Signal(seq.window_bytes.bit_length())
        # the row's byte offset into the window buffer (its first word holds the command's
        # dram_addr)
        self.window_row = Signal(range(seq.window_bytes + seq.word_bytes))
        # the program's STORE row under way in the store mover (posted: the commands after it
        # go on): its DRAM range and buffer space, which a LOAD row, a span and a fetch wait for
        self.store_lo = Signal(seq.byte_address_width + 1)
        self.store_hi = Signal(seq.byte_address_width + 1)
        self.store_space = Signal(fields["space"])
        self.store_busy = Signal()  # the store mover's ``busy``
        self.store_pc = Signal(fields["dram_addr"])  # the posted STORE's address
        # the engine refused a read of the posted STORE (its error rose while the store mover
        # read and the load mover did not write): the refusal names that STORE
        self.store_fault = Signal()
        self.load_busy = Signal()
        self.error_seen = Signal()  # engine_error a cycle ago

    def saturated(self, value):
        bits = len(self.span)
        return Mux(over(value, bits), (1 << bits) - 1, value[:bits])


def _wide_loads() -> tuple:
    """The buffer spaces a LOAD writes in chunks (every BufferSpace not in BYTE_SPACES)."""
    return tuple(space for space in BufferSpace if space not in BYTE_SPACES)


def _store_hazard(s: _Registers, lo, length, space=None):
    """A read of DRAM ``[lo, lo + length)`` (and a write into buffer ``space``) that must wait
    for the posted STORE row in the store mover: it writes those bytes (reads that space)."""
    hazard = (lo < s.store_hi) & (s.store_lo < lo + length)
    if space is not None:
        hazard = hazard | (space == s.store_space)
    return s.store_busy & hazard


def connect_dma(m, sequencer: Sequencer, dma) -> None:
    """Join the sequencer's DMA side to a ``hw.soc.dma.DMA`` (its streams and the writer's busy)."""
    wiring.connect(m, sequencer.dma_read_request, dma.read_request)
    wiring.connect(m, dma.read_data, sequencer.dma_read_data)
    wiring.connect(m, sequencer.dma_write_request, dma.write_request)
    wiring.connect(m, sequencer.dma_write_data, dma.write_data)
    m.d.comb += sequencer.dma_write_busy.eq(dma.write_busy)

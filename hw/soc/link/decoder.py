"""The link's command decoder: a received frame's opcode dispatched, its response built.

A frame delivered by the codec (:mod:`hw.soc.link.codec`) is executed (the engine's buffer
ports and ``start``; in resident mode the resident model state, :mod:`hw.soc.link.model`) and
answered in the frame buffer: the status byte at address 0, then the opcode's response layout
(IDENTIFY, STATUS, RUN, MODEL_COMMIT, RESIDENT_WAIT) or a READ's / MEM_READ's bytes. The STATUS
counters (good frames, bad CRCs, framing errors i.e. over-long lengths, inter-byte timeouts,
unknown opcodes, engine errors; the model's fields from the model state) are a view of the
STATUS response.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import transfer_bytes
from fpga.spec.protocol import (
    IDENTIFY_RESPONSE,
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
    READ_REQUEST,
    RESIDENT_RUN_REQUEST,
    RESIDENT_RUN_RESPONSE,
    RESPONSE_FLAG,
    RESPONSE_STATUS,
    RUN_RESPONSE,
    STATUS_RESPONSE,
    WRITE_REQUEST,
    LinkKind,
    Opcode,
    Status,
    identify_fields,
)
from hw.engine.ports import read_signature, write_signature
from hw.soc.link.codec import frame_signature
from hw.soc.link.layouts import REQUEST_BYTES, request_view, struct_layout
from hw.soc.link.model import MODEL_STATUS_FIELDS, resident_signature

#: response layouts filled after the status byte, per opcode
RESPONSES = (IDENTIFY_RESPONSE, STATUS_RESPONSE, RUN_RESPONSE)
RESIDENT_RESPONSES = (MODEL_COMMIT_RESPONSE, RESIDENT_RUN_RESPONSE)
#: the STATUS fields the decoder counts (the rest are the resident model state's)
LINK_COUNTERS = tuple(name for name in STATUS_RESPONSE.names if name not in MODEL_STATUS_FIELDS)
RESIDENT_OPCODES = (
    Opcode.MEM_WRITE,
    Opcode.MEM_READ,
    Opcode.MODEL_COMMIT,
    Opcode.RUN_RESIDENT,
    Opcode.RESIDENT_WAIT,
)


def engine_ports(config: AcceleratorConfig) -> dict:
    """The decoder's side of the engine (see hw.engine.engine.ConvEngine)."""
    return {
        # the buffer ports (hw.engine.ports): a byte a chunk, read back a byte at a time
        "write": Out(write_signature(config)),
        "read": Out(read_signature(config)),
        "start": Out(1),
        "done": In(1),
        "cycles": In(32),
        "error": In(1),
        "clear_error": Out(1),
    }


class CommandDecoder(wiring.Component):
    """Executes the frames of ``frames`` (:func:`hw.soc.link.codec.frame_signature`) on the engine
    (:func:`engine_ports`) and, with ``dram_bytes``, the resident model state (``model``:
    :func:`hw.soc.link.model.resident_signature`); answers each in the frame buffer.

    ``links``: the line rate (bits/s, 0 for none) of each :class:`LinkKind` the SoC serves; with
    more than one, ``link`` says which one the frame came on (IDENTIFY reports it). With
    ``LinkKind.ETHERNET``, a UDP frame (``link``) from a sender other than the host
    (``peer_ok`` low, see ``hw.soc.link.udp``) is dropped unanswered, unless it is an IDENTIFY;
    ``learn`` makes the frame's sender the host (a served UDP frame)."""

    def __init__(
        self,
        config: AcceleratorConfig,
        depth: int,
        baud: int = 0,
        dram_bytes: int = 0,
        links: dict | None = None,
    ):
        self.config = config
        self.baud = baud
        self.dram_bytes = dram_bytes
        self.links = links or {LinkKind.UART if baud else LinkKind.STREAM: baud}
        block = transfer_bytes(config)
        ports = {"frames": In(frame_signature(depth, REQUEST_BYTES, block)), **engine_ports(config)}
        if dram_bytes:
            ports["model"] = Out(resident_signature(depth, block))
        if len(self.links) > 1:
            ports["link"] = In(LinkKind)
        if LinkKind.ETHERNET in self.links:
            ports["peer_ok"] = In(1)
            ports["learn"] = Out(1)
        super().__init__(ports)
        #: a RUN_RESIDENT with the last started run's seq replays it (answered, not run again);
        #: cleared by IDENTIFY (a new host session) and MODEL_COMMIT
        self._replay = Signal()
        self._status = Signal(8)  # the response's status byte
        self._counters = Signal(struct_layout(STATUS_RESPONSE, LINK_COUNTERS))
        self._index = Signal(16)  # WRITE's payload byte, READ's engine read
        self._pending_reads = Signal(16)  # READ's bytes returned
        filled = RESPONSES + (RESIDENT_RESPONSES if dram_bytes else ())
        self._fill_index = Signal(range(max(layout.size for layout in filled) + 1))

    def elaborate(self, platform):
        m = Module()
        frames, counters = self.frames, self._counters
        header = frames.header
        write_request = request_view(WRITE_REQUEST, frames.head)
        read_request = request_view(READ_REQUEST, frames.head)
        m.d.comb += [
            frames.send_header.seq.eq(header.seq),
            frames.send_header.opcode.eq(header.opcode | RESPONSE_FLAG),
        ]
        responses = self._responses(m)
        index, pending_reads, fill_index = self._index, self._pending_reads, self._fill_index

        with m.If(frames.timeout):
            self._count(m, counters.timeouts)
        with m.If(frames.framing_error):
            self._count(m, counters.framing_errors)
        if self.dram_bytes:
            with m.If(self.model.engine_error):
                self._count(m, counters.engine_errors)

        with m.FSM():
            with m.State("IDLE"):
                # the buffer answers a cycle after the address: a WRITE's first data byte is
                # read while it is dispatched, each next one while the last is taken
                m.d.comb += frames.rd_addr.eq(WRITE_REQUEST.size)
                with m.If(frames.valid):
                    self._dispatch(m)
            with m.State("WRITE"):
                m.d.comb += [
                    frames.rd_addr.eq(Mux(self.write.ready, index + 1, index)),
                    self.write.valid.eq(1),
                    self.write.payload.count.eq(1),  # the link writes bytes
                    self.write.payload.space.eq(write_request.space),
                    self.write.payload.addr.eq(write_request.offset + index - WRITE_REQUEST.size),
                    self.write.payload.data.eq(frames.rd_data),
                ]
                with m.If(self.write.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == header.length - 1):
                        self._respond(m, Status.OK)
            with m.State("READ"):
                # issue one engine read per cycle, store each returned byte after the status
                m.d.comb += [
                    self.read.request.payload.space.eq(read_request.space),
                    self.read.request.payload.addr.eq(read_request.offset + index),
                    self.read.request.valid.eq(index < read_request.count),
                ]
                with m.If(index < read_request.count):
                    m.d.sync += index.eq(index + 1)
                with m.If(self.read.response.valid):
                    m.d.comb += [
                        frames.wr_addr.eq(RESPONSE_STATUS.size + pending_reads),
                        frames.wr_data.eq(self.read.response.payload.data),
                        frames.wr_en.eq(1),
                    ]
                    m.d.sync += pending_reads.eq(pending_reads + 1)
                    with m.If(pending_reads == read_request.count - 1):
                        self._respond(m, Status.OK, RESPONSE_STATUS.size + read_request.count)
                with m.If(read_request.count == 0):
                    self._respond(m, Status.OK)
            with m.State("RUN"):
                m.d.comb += self.start.eq(1)
                m.next = "WAIT_DONE"
            with m.State("WAIT_DONE"):
                with m.If(self.done):
                    self._fill(m, Mux(self.error, Status.ENGINE_ERROR, Status.OK))
                    with m.If(self.error):
                        self._count(m, counters.engine_errors)
            if self.dram_bytes:
                self._resident_states(m)
            with m.State("FILL"):
                # the opcode's response layout, byte by byte, after the status byte
                m.d.comb += [
                    frames.wr_addr.eq(RESPONSE_STATUS.size + fill_index),
                    frames.wr_en.eq(1),
                ]
                m.d.sync += fill_index.eq(fill_index + 1)
                with m.Switch(header.opcode):
                    for opcode, value in responses.items():
                        size = len(value) // 8
                        with m.Case(opcode):
                            m.d.comb += frames.wr_data.eq(value.word_select(fill_index, 8))
                            with m.If(fill_index == size - 1):
                                self._send(m, RESPONSE_STATUS.size + size)
            with m.State("RESPOND"):  # the status byte, while the codec starts the response
                m.d.comb += [
                    frames.wr_addr.eq(0),
                    frames.wr_data.eq(self._status),
                    frames.wr_en.eq(1),
                ]
                m.next = "IDLE"

        if self.dram_bytes:  # the model's transfers own the frame buffer
            model = self.model
            m.d.comb += [model.header.eq(header), model.request.eq(frames.head)]
            m.d.comb += [model.rd_data.eq(frames.rd_data), model.rd_block.eq(frames.rd_block)]
            with m.If(model.buffer_owned):
                m.d.comb += [
                    frames.wr_en.eq(model.wr_en),
                    frames.wr_addr.eq(model.wr_addr),
                    frames.wr_data.eq(model.wr_data),
                    frames.rd_addr.eq(model.rd_addr),
                ]
        return m

    def _responses(self, m) -> dict:
        """Opcode -> the value of its response layout (what FILL writes after the status)."""
        # the layout's constant fields, then the two of the link the request came on (the last
        # two fields: one value by concatenation, no partly overridden signal, which
        # Verilator's event scheduling would leave at zero)
        fields = identify_fields(self.config, self.baud, self.dram_bytes)
        constant = (
            struct_layout(IDENTIFY_RESPONSE)
            .const(IDENTIFY_RESPONSE.gateware_values(**fields))
            .as_value()
        )
        widths = IDENTIFY_RESPONSE.widths()
        assert IDENTIFY_RESPONSE.names[-2:] == ("link", "link_bps")
        link, link_bps = Signal(widths["link"]), Signal(widths["link_bps"])
        kinds = list(self.links)
        if len(kinds) == 1:
            m.d.comb += [link.eq(kinds[0]), link_bps.eq(self.links[kinds[0]])]
        else:
            m.d.comb += link.eq(self.link)
            with m.Switch(self.link):
                for kind in kinds:
                    with m.Case(kind):
                        m.d.comb += link_bps.eq(self.links[kind])
        identify = Cat(constant[: len(constant) - len(link) - len(link_bps)], link, link_bps)
        status = Signal(struct_layout(STATUS_RESPONSE))  # the counters, the model's state
        for name in LINK_COUNTERS:
            m.d.comb += getattr(status, name).eq(getattr(self._counters, name))
        run_result = Signal(struct_layout(RUN_RESPONSE))
        m.d.comb += [run_result.cycles.eq(self.cycles), run_result.engine_error.eq(self.error)]
        responses = {
            Opcode.IDENTIFY: identify,
            Opcode.STATUS: status.as_value(),
            Opcode.RUN: run_result.as_value(),
        }
        if self.dram_bytes:
            for name in MODEL_STATUS_FIELDS:
                m.d.comb += getattr(status, name).eq(getattr(self.model.status, name))
            responses[Opcode.MODEL_COMMIT] = self.model.commit_response.as_value()
            responses[Opcode.RESIDENT_WAIT] = self.model.run_response.as_value()
        return responses

    @staticmethod
    def _count(m, counter):
        m.d.sync += counter.eq(counter + 1)

    def _send(self, m, length):
        """Hand the response (``length`` payload bytes incl. the status) to the codec."""
        m.d.comb += [self.frames.send.eq(1), self.frames.send_header.length.eq(length)]
        m.next = "RESPOND"

    def _respond(self, m, code, length=RESPONSE_STATUS.size):
        m.d.sync += self._status.eq(code)
        self._send(m, length)

    def _fill(self, m, code):
        """Answer with ``code`` and the opcode's response layout (see FILL)."""
        m.d.sync += [self._status.eq(code), self._fill_index.eq(0)]
        m.next = "FILL"

    def _refused_busy(self):
        """While a program runs: the requests that need what it uses (the engine's buffers,
        the model, the sequencer's program) are answered BUSY; IDENTIFY, STATUS, CLEAR,
        MEM_READ, a MEM_WRITE above the model, RESIDENT_WAIT and a replayed RUN_RESIDENT
        (the same seq as the run's) go on."""
        if not self.dram_bytes:
            return 0
        header, model = self.frames.header, self.model
        mem_write = request_view(MEM_WRITE_REQUEST, self.frames.head)
        opcode = header.opcode
        return model.running & (
            (opcode == Opcode.WRITE)
            | (opcode == Opcode.READ)
            | (opcode == Opcode.RUN)
            | (opcode == Opcode.MODEL_COMMIT)
            | ((opcode == Opcode.MEM_WRITE) & (mem_write.addr < model.status.model_bytes))
            | ((opcode == Opcode.RUN_RESIDENT) & (header.seq != model.run_seq))
        )

    def _dispatch(self, m):
        """The cycle a frame is delivered: count it, refuse it or start its command."""
        cfg, counters, header = self.config, self._counters, self.frames.header
        index, pending_reads = self._index, self._pending_reads
        read_request = request_view(READ_REQUEST, self.frames.head)
        identify = header.opcode == Opcode.IDENTIFY
        if LinkKind.ETHERNET in self.links:
            udp = self.link == LinkKind.ETHERNET
            not_peer = udp & ~self.peer_ok & ~identify
            m.d.comb += self.learn.eq(udp & self.frames.crc_ok & ~not_peer)
        else:
            not_peer = 0
        with m.If(~self.frames.crc_ok):
            self._count(m, counters.crc_errors)
            self._respond(m, Status.BAD_CRC)
        with m.Elif(not_peer):  # unanswered: an answer would make LiteEth ARP for its sender
            m.d.comb += self.frames.discard.eq(1)
        with m.Elif(self._refused_busy()):
            self._count(m, counters.frames_ok)
            self._respond(m, Status.BUSY)
        with m.Else():
            self._count(m, counters.frames_ok)
            with m.Switch(header.opcode):
                with m.Case(Opcode.IDENTIFY, Opcode.STATUS):
                    with m.If(identify):
                        m.d.sync += self._replay.eq(0)
                    self._fill(m, Status.OK)
                with m.Case(Opcode.CLEAR):
                    m.d.sync += [
                        counters.crc_errors.eq(0),
                        counters.framing_errors.eq(0),
                        counters.timeouts.eq(0),
                        counters.bad_opcodes.eq(0),
                        counters.engine_errors.eq(0),
                    ]
                    m.d.comb += self.clear_error.eq(1)
                    if self.dram_bytes:  # and the sequencer's last refusal
                        m.d.comb += self.model.clear.eq(1)
                    self._respond(m, Status.OK)
                with m.Case(Opcode.WRITE):
                    with m.If(header.length < WRITE_REQUEST.size):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Elif(header.length == WRITE_REQUEST.size):
                        self._respond(m, Status.OK)
                    with m.Else():
                        m.d.sync += index.eq(WRITE_REQUEST.size)
                        m.next = "WRITE"
                with m.Case(Opcode.READ):
                    too_long = read_request.count > cfg.max_payload - RESPONSE_STATUS.size
                    with m.If((header.length != READ_REQUEST.size) | too_long):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += [index.eq(0), pending_reads.eq(0)]
                        m.next = "READ"
                with m.Case(Opcode.RUN):
                    m.next = "RUN"
                if self.dram_bytes:
                    self._resident_requests(m)
                with m.Default():
                    self._count(m, counters.bad_opcodes)
                    self._respond(m, Status.BAD_OPCODE)

    def _resident_requests(self, m):
        """The dispatch of the resident-mode opcodes: refused while the DRAM is not ready (before
        its init/calibration, or it failed); else validated, then handed to the model state."""
        cfg, header, model = self.config, self.frames.header, self.model
        mem_read = request_view(MEM_READ_REQUEST, self.frames.head)
        run = request_view(RESIDENT_RUN_REQUEST, self.frames.head)
        model_end = model.status.model_bytes
        with m.Case(*RESIDENT_OPCODES):
            with m.If(~model.dram_ready):
                self._respond(m, Status.DRAM_NOT_READY)
            with m.Else(), m.Switch(header.opcode):
                with m.Case(Opcode.MEM_WRITE):
                    with m.If(header.length < MEM_WRITE_REQUEST.size):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Elif(header.length == MEM_WRITE_REQUEST.size):
                        self._respond(m, Status.OK)
                    with m.Else():
                        m.d.comb += model.store.eq(1)
                        m.next = "TRANSFER"
                with m.Case(Opcode.MEM_READ):
                    too_long = mem_read.count > cfg.max_payload - RESPONSE_STATUS.size
                    with m.If((header.length != MEM_READ_REQUEST.size) | too_long):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Else():
                        m.d.comb += model.load.eq(1)
                        m.next = "TRANSFER"
                with m.Case(Opcode.MODEL_COMMIT):
                    with m.If(header.length != MODEL_COMMIT_REQUEST.size):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Else():
                        m.d.comb += model.commit.eq(1)
                        m.d.sync += self._replay.eq(0)
                        m.next = "TRANSFER"
                with m.Case(Opcode.RUN_RESIDENT):
                    with m.If(header.length != RESIDENT_RUN_REQUEST.size):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Elif(model.status.model_loaded == 0):
                        self._respond(m, Status.NO_MODEL)
                    with m.Elif(model.running | (self._replay & (header.seq == model.run_seq))):
                        # the replay of the last run's request (running: _refused_busy let
                        # only that one through): answered, never run twice
                        self._respond(m, Status.OK)
                    with m.Elif((run.input_addr < model_end) | (run.output_addr < model_end)):
                        self._respond(m, Status.BAD_ADDRESS)
                    with m.Else():
                        m.d.comb += model.run.eq(1)
                        m.next = "SEQ_START"
                with m.Case(Opcode.RESIDENT_WAIT):
                    with m.If(header.length != 0):
                        self._respond(m, Status.BAD_LENGTH)
                    with m.Elif(model.status.model_loaded == 0):
                        self._respond(m, Status.NO_MODEL)
                    with m.Else():
                        m.next = "PROGRAM_WAIT"

    def _resident_states(self, m):
        """The states that wait for the model state's transfer or the sequencer's program."""
        model = self.model
        mem_read = request_view(MEM_READ_REQUEST, self.frames.head)
        with m.State("TRANSFER"):  # the model state's sequencer command
            with m.If(model.done):
                failed = model.failed
                with m.Switch(self.frames.header.opcode):
                    with m.Case(Opcode.MEM_READ):
                        with m.If(failed):
                            self._respond(m, Status.DEVICE_ERROR)
                        with m.Else():
                            self._respond(m, Status.OK, RESPONSE_STATUS.size + mem_read.count)
                    with m.Case(Opcode.MODEL_COMMIT):
                        code = Mux(model.match, Status.OK, Status.BAD_MODEL)
                        self._fill(m, Mux(failed, Status.DEVICE_ERROR, code))
                    with m.Default():  # MEM_WRITE
                        self._respond(m, Mux(failed, Status.DEVICE_ERROR, Status.OK))
        with m.State("SEQ_START"):  # the run goes on alone; RESIDENT_WAIT answers its end
            m.d.comb += model.start.eq(1)
            m.d.sync += self._replay.eq(1)
            self._respond(m, Status.OK)
        with m.State("PROGRAM_WAIT"):
            with m.If(~model.running):
                self._fill(m, Mux(model.run_failed, Status.DEVICE_ERROR, Status.OK))

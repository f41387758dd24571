"""Frame decoder, command decoder and response encoder of the link (see fpga.spec.protocol).

Byte streams in and out (valid/ready). A request is buffered whole in ``frame`` memory and its
CRC-32 (``amaranth.lib.crc``, the catalog's CRC-32/ISO-HDLC = zlib's) checked before anything is
executed; responses are built in the same memory (status byte first) and sent with their own
CRC. The frame header, the WRITE/READ request headers and the IDENTIFY/STATUS/RUN responses are
``data.View`` s of the layouts in :mod:`fpga.spec.protocol` (the host packs and unpacks the same
tables with :mod:`struct`), so no byte offset is written twice. The STATUS counters (good
frames, bad CRCs, framing errors i.e. over-long lengths, inter-byte timeouts, unknown opcodes,
engine errors) are themselves a view of the STATUS response.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import crc, data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import HostSpace, buffer_address_bits
from fpga.spec.commands import Opcode as Command
from fpga.spec.config import AcceleratorConfig
from fpga.spec.protocol import (
    CRC_TRAILER,
    FRAME_HEADER,
    FRAME_TIMEOUT_CYCLES,
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
    SYNC,
    WRITE_REQUEST,
    DramState,
    Opcode,
    Status,
    identify_fields,
)
from hw.soc.sequencer import SequencerError, command_layout

#: the frame CRC: zlib's CRC-32, one byte per cycle
FRAME_CRC = crc.catalog.CRC32_ISO_HDLC(data_width=8)


def struct_layout(layout) -> data.StructLayout:
    """A ``fpga.spec.protocol.PayloadLayout`` as a StructLayout: the same fields at the same bit
    offsets (byte ``i`` of the packed payload is bits ``8*i .. 8*i+7``)."""
    return data.StructLayout({field: unsigned(w) for field, w in layout.widths().items()})


def view(layout, value):
    """``value`` (bits, first byte least significant) seen through a protocol layout."""
    return data.View(struct_layout(layout), value)


#: request layouts whose fields the controller reads from the first payload bytes
REQUESTS = (
    WRITE_REQUEST,
    READ_REQUEST,
    MEM_WRITE_REQUEST,
    MEM_READ_REQUEST,
    MODEL_COMMIT_REQUEST,
    RESIDENT_RUN_REQUEST,
)
#: response layouts filled after the status byte, per opcode
RESPONSES = (IDENTIFY_RESPONSE, STATUS_RESPONSE, RUN_RESPONSE)
RESIDENT_RESPONSES = (MODEL_COMMIT_RESPONSE, RESIDENT_RUN_RESPONSE)


def frame_depth(config: AcceleratorConfig) -> int:
    """Bytes of the frame buffer: the longest request payload or response (+ slack)."""
    responses = max(layout.size for layout in RESPONSES + RESIDENT_RESPONSES)
    return max(config.max_payload, RESPONSE_STATUS.size + responses) + 8


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
    reports ``dram_state``."""

    def __init__(
        self,
        config: AcceleratorConfig,
        timeout_cycles: int = FRAME_TIMEOUT_CYCLES,
        baud: int = 0,
        dram_bytes: int = 0,
    ):
        self.config = config
        self.timeout_cycles = timeout_cycles
        self.baud = baud
        self.dram_bytes = dram_bytes
        self.depth = frame_depth(config)
        resident = {}
        if dram_bytes:
            addr_bits = (self.depth - 1).bit_length()
            resident = {
                "seq_start": Out(1),
                "seq_program_addr": Out(32),
                "seq_input_base": Out(32),
                "seq_output_base": Out(32),
                "seq_submit": Out(1),  # held until seq_submit_taken
                "seq_command": Out(command_layout()),
                "seq_submit_taken": In(1),
                "seq_submit_done": In(1),
                "seq_submit_error": In(SequencerError),
                "seq_running": In(1),
                "seq_host_cycles": In(32),
                "seq_done": In(1),
                "seq_error_code": In(SequencerError),
                "seq_pc": In(32),
                "seq_cycles": In(32),
                "seq_engine_cycles": In(32),
                "seq_dma_wait_cycles": In(32),
                "dram_ready": In(1, init=1),  # the DRAM controller is initialized
                "dram_failed": In(1),  # its init/calibration failed
                "host_write_en": In(1),
                "host_write_space": In(range(max(HostSpace) + 1)),
                "host_write_addr": In(addr_bits),
                "host_write_data": In(8),
                "host_read_en": In(1),
                "host_read_addr": In(addr_bits),
                "host_read_valid": Out(1),
                "host_read_data": Out(8),
            }
        super().__init__(
            {
                **resident,
                "rx_data": In(8),
                "rx_valid": In(1),
                "rx_ready": Out(1),
                "tx_data": Out(8),
                "tx_valid": Out(1),
                "tx_ready": In(1),
                "idle": Out(1),
                # engine side (see hw.engine.engine.ConvEngine)
                "write_en": Out(1),
                "write_space": Out(4),
                "write_addr": Out(buffer_address_bits(config)),
                "write_data": Out(8),
                "write_ready": In(1, init=1),  # the write is taken in a cycle where this is 1
                "read_en": Out(1),
                "read_space": Out(4),
                "read_addr": Out(buffer_address_bits(config)),
                "read_valid": In(1),
                "read_data": In(8),
                "start": Out(1),
                "busy": In(1),
                "done": In(1),
                "cycles": In(32),
                "error": In(1),
                "clear_error": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        resident = self.dram_bytes > 0
        responses_size = max(
            layout.size for layout in RESPONSES + (RESIDENT_RESPONSES if resident else ())
        )
        m.submodules.frame = frame = Memory(shape=8, depth=self.depth, init=[])
        wr = frame.write_port()
        rd = frame.read_port(domain="comb")
        m.submodules.crc = frame_crc = FRAME_CRC.create()

        header = Signal(struct_layout(FRAME_HEADER))  # length, seq, opcode of the request
        request_bytes = max(layout.size for layout in REQUESTS)
        request = Signal(8 * request_bytes)  # the first payload bytes, for the views below
        write_request = view(WRITE_REQUEST, request[: 8 * WRITE_REQUEST.size])
        read_request = view(READ_REQUEST, request[: 8 * READ_REQUEST.size])
        mem_write = view(MEM_WRITE_REQUEST, request[: 8 * MEM_WRITE_REQUEST.size])
        mem_read = view(MEM_READ_REQUEST, request[: 8 * MEM_READ_REQUEST.size])
        commit = view(MODEL_COMMIT_REQUEST, request[: 8 * MODEL_COMMIT_REQUEST.size])
        run_request = view(RESIDENT_RUN_REQUEST, request[: 8 * RESIDENT_RUN_REQUEST.size])
        index = Signal(16)
        timer = Signal(range(self.timeout_cycles + 1))

        counters = Signal(struct_layout(STATUS_RESPONSE))  # what STATUS answers
        identify = struct_layout(IDENTIFY_RESPONSE).const(
            IDENTIFY_RESPONSE.gateware_values(**identify_fields(cfg, self.baud, self.dram_bytes))
        )
        run_result = Signal(struct_layout(RUN_RESPONSE))
        m.d.comb += [run_result.cycles.eq(self.cycles), run_result.engine_error.eq(self.error)]
        responses = {
            Opcode.IDENTIFY: identify.as_value(),
            Opcode.STATUS: counters.as_value(),
            Opcode.RUN: run_result.as_value(),
        }
        if resident:
            checked = Signal(struct_layout(MODEL_COMMIT_RESPONSE))
            resident_run = Signal(struct_layout(RESIDENT_RUN_RESPONSE))
            program_addr = Signal(32)
            m.submodules.checksum = checksum = FRAME_CRC.create()
            to_checksum = self.host_write_en & (self.host_write_space == HostSpace.CHECKSUM)
            m.d.comb += [
                checksum.data.eq(self.host_write_data),
                checksum.valid.eq(to_checksum),
                checked.crc.eq(checksum.crc),
                resident_run.cycles.eq(self.seq_cycles),
                resident_run.engine_cycles.eq(self.seq_engine_cycles),
                resident_run.dma_wait_cycles.eq(self.seq_dma_wait_cycles),
                resident_run.host_cycles.eq(self.seq_host_cycles),
                resident_run.error_code.eq(self.seq_error_code),
                resident_run.pc.eq(self.seq_pc),
                self.seq_program_addr.eq(program_addr),
            ]
            responses[Opcode.MODEL_COMMIT] = checked.as_value()
            responses[Opcode.RESIDENT_WAIT] = resident_run.as_value()
            dram_state = Mux(
                self.dram_failed,
                DramState.FAILED,
                Mux(self.dram_ready, DramState.READY, DramState.INITIALIZING),
            )
            m.d.sync += [
                counters.dram_state.eq(dram_state),
                counters.running.eq(self.seq_running),
            ]
            # a program's end, whatever the controller is doing then (it serves frames while
            # the program runs): what RESIDENT_WAIT and STATUS report
            run_failed = Signal()  # the last program run ended in a refusal
            run_seq = Signal(8)  # the frame seq of the RUN_RESIDENT that started it
            with m.If(self.seq_done):
                failed = self.seq_error_code != SequencerError.NONE
                m.d.sync += run_failed.eq(failed)
                with m.If(failed):
                    m.d.sync += [
                        counters.sequencer_error.eq(self.seq_error_code),
                        counters.sequencer_pc.eq(self.seq_pc),
                    ]
                    with m.If(self.seq_error_code == SequencerError.ENGINE):
                        m.d.sync += counters.engine_errors.eq(counters.engine_errors + 1)

        status = Signal(8)
        resp_len = Signal(16)  # response payload bytes incl. status, held in frame[0..]
        tx_index = Signal(16)
        fill_index = Signal(range(responses_size + 1))
        pending_reads = Signal(16)

        m.d.comb += [wr.en.eq(0), self.write_en.eq(0), self.read_en.eq(0), self.start.eq(0)]

        byte_in = self.rx_data
        rx_fire = Signal()
        m.d.comb += rx_fire.eq(self.rx_valid & self.rx_ready)

        # -- inter-byte timeout while inside a frame ---------------------------------------------
        in_frame = Signal()
        with m.If(rx_fire | ~in_frame):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self.timeout_cycles):
            m.d.sync += timer.eq(timer + 1)
        timed_out = Signal()
        m.d.comb += timed_out.eq(in_frame & (timer == self.timeout_cycles))

        def count(counter):
            m.d.sync += counter.eq(counter + 1)

        def receive(checked=True):
            """A state inside a frame: take bytes, hunt for the next sync on a stall."""
            m.d.comb += [self.rx_ready.eq(1), in_frame.eq(1)]
            if checked:  # the byte goes into the CRC
                m.d.comb += [frame_crc.data.eq(byte_in), frame_crc.valid.eq(rx_fire)]
            with m.If(timed_out):
                count(counters.timeouts)
                m.next = "SYNC0"

        def respond(code):
            m.d.sync += [status.eq(code), resp_len.eq(RESPONSE_STATUS.size)]
            m.next = "RESPOND"

        def fill(code):
            """Answer with ``code`` and the opcode's response layout (see FILL)."""
            m.d.sync += [status.eq(code), fill_index.eq(0)]
            m.next = "FILL"

        # what the resident-mode states share with the rest of the controller
        context = SimpleNamespace(
            header=header,
            mem_write=mem_write,
            mem_read=mem_read,
            commit=commit,
            counters=counters,
            status=status,
            resp_len=resp_len,
            wr=wr,
            rd=rd,
            respond=respond,
            fill=fill,
            count=count,
        )
        if resident:
            context.checksum, context.program_addr = checksum, program_addr
            context.run_request, context.run_failed, context.run_seq = (
                run_request,
                run_failed,
                run_seq,
            )

        with m.FSM():
            with m.State("SYNC0"):
                m.d.comb += [self.rx_ready.eq(1), self.idle.eq(1)]
                with m.If(rx_fire & (byte_in == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                receive(checked=False)
                m.d.comb += frame_crc.start.eq(1)  # the CRC covers what follows the sync
                with m.If(rx_fire):
                    with m.If(byte_in == SYNC[1]):
                        m.d.sync += index.eq(0)
                        m.next = "HEADER"
                    with m.Elif(byte_in != SYNC[0]):
                        m.next = "SYNC0"
            with m.State("HEADER"):
                receive()
                with m.If(rx_fire):
                    m.d.sync += [
                        header.as_value().word_select(index[:2], 8).eq(byte_in),
                        index.eq(index + 1),
                    ]
                    with m.If(index == FRAME_HEADER.size - 1):  # length is in, opcode arrives
                        m.d.sync += index.eq(0)
                        with m.If(header.length > cfg.max_payload):
                            count(counters.framing_errors)
                            m.next = "SYNC0"
                        with m.Elif(header.length == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receive()
                m.d.comb += [wr.addr.eq(index), wr.data.eq(byte_in), wr.en.eq(rx_fire)]
                with m.If(rx_fire):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index < request_bytes):
                        m.d.sync += request.word_select(index, 8).eq(byte_in)
                    with m.If(index == header.length - 1):
                        m.d.sync += index.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                receive()  # the received CRC goes through the CRC too: a residue check
                with m.If(rx_fire):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == CRC_TRAILER.size - 1):
                        m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(~frame_crc.match_detected):
                    count(counters.crc_errors)
                    respond(Status.BAD_CRC)
                with m.Elif(self._refused_busy(context)):
                    count(counters.frames_ok)
                    respond(Status.BUSY)
                with m.Else():
                    count(counters.frames_ok)
                    with m.Switch(header.opcode):
                        with m.Case(Opcode.IDENTIFY, Opcode.STATUS):
                            fill(Status.OK)
                        with m.Case(Opcode.CLEAR):
                            m.d.sync += [
                                counters.crc_errors.eq(0),
                                counters.framing_errors.eq(0),
                                counters.timeouts.eq(0),
                                counters.bad_opcodes.eq(0),
                                counters.engine_errors.eq(0),
                                counters.sequencer_error.eq(0),
                                counters.sequencer_pc.eq(0),
                            ]
                            m.d.comb += self.clear_error.eq(1)
                            respond(Status.OK)
                        with m.Case(Opcode.WRITE):
                            with m.If(header.length < WRITE_REQUEST.size):
                                respond(Status.BAD_LENGTH)
                            with m.Elif(header.length == WRITE_REQUEST.size):
                                respond(Status.OK)
                            with m.Else():
                                m.d.sync += index.eq(WRITE_REQUEST.size)
                                m.next = "WRITE"
                        with m.Case(Opcode.READ):
                            too_long = read_request.count > cfg.max_payload - RESPONSE_STATUS.size
                            with m.If((header.length != READ_REQUEST.size) | too_long):
                                respond(Status.BAD_LENGTH)
                            with m.Else():
                                m.d.sync += [index.eq(0), pending_reads.eq(0)]
                                m.next = "READ"
                        with m.Case(Opcode.RUN):
                            m.next = "RUN"
                        if resident:
                            self._resident_requests(m, context)
                        with m.Default():
                            count(counters.bad_opcodes)
                            respond(Status.BAD_OPCODE)
            with m.State("WRITE"):
                m.d.comb += [
                    rd.addr.eq(index),
                    self.write_en.eq(1),
                    self.write_space.eq(write_request.space),
                    self.write_addr.eq(write_request.offset + index - WRITE_REQUEST.size),
                    self.write_data.eq(rd.data),
                ]
                with m.If(self.write_ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == header.length - 1):
                        respond(Status.OK)
            with m.State("READ"):
                # issue one engine read per cycle, store each returned byte after the status
                m.d.comb += [
                    self.read_space.eq(read_request.space),
                    self.read_addr.eq(read_request.offset + index),
                    self.read_en.eq(index < read_request.count),
                ]
                with m.If(index < read_request.count):
                    m.d.sync += index.eq(index + 1)
                with m.If(self.read_valid):
                    m.d.comb += [
                        wr.addr.eq(RESPONSE_STATUS.size + pending_reads),
                        wr.data.eq(self.read_data),
                        wr.en.eq(1),
                    ]
                    m.d.sync += pending_reads.eq(pending_reads + 1)
                    with m.If(pending_reads == read_request.count - 1):
                        m.d.sync += [
                            status.eq(Status.OK),
                            resp_len.eq(RESPONSE_STATUS.size + read_request.count),
                        ]
                        m.next = "RESPOND"
                with m.If(read_request.count == 0):
                    respond(Status.OK)
            with m.State("RUN"):
                m.d.comb += self.start.eq(1)
                m.next = "WAIT_DONE"
            with m.State("WAIT_DONE"):
                with m.If(self.done):
                    fill(Mux(self.error, Status.ENGINE_ERROR, Status.OK))
                    with m.If(self.error):
                        count(counters.engine_errors)
            if resident:
                self._resident_states(m, context)
            with m.State("FILL"):
                # the opcode's response layout, byte by byte, after the status byte
                m.d.comb += [wr.addr.eq(RESPONSE_STATUS.size + fill_index), wr.en.eq(1)]
                m.d.sync += fill_index.eq(fill_index + 1)
                with m.Switch(header.opcode):
                    for opcode, value in responses.items():
                        size = len(value) // 8
                        with m.Case(opcode):
                            m.d.comb += wr.data.eq(value.word_select(fill_index, 8))
                            with m.If(fill_index == size - 1):
                                m.d.sync += resp_len.eq(RESPONSE_STATUS.size + size)
                                m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [wr.addr.eq(0), wr.data.eq(status), wr.en.eq(1)]
                m.d.comb += frame_crc.start.eq(1)
                m.d.sync += tx_index.eq(0)
                m.next = "TX"
            with m.State("TX"):
                # sync, header, payload (resp_len bytes from frame[0..]), crc
                response_header = Signal(struct_layout(FRAME_HEADER))
                m.d.comb += [
                    response_header.length.eq(resp_len),
                    response_header.seq.eq(header.seq),
                    response_header.opcode.eq(header.opcode | RESPONSE_FLAG),
                ]
                prefix = Cat(Const(int.from_bytes(SYNC, "little"), 8 * len(SYNC)), response_header)
                prefix_size = len(prefix) // 8
                payload_end = resp_len + prefix_size
                byte = Signal(8)
                m.d.comb += rd.addr.eq(tx_index - prefix_size)
                with m.If(tx_index < prefix_size):
                    m.d.comb += byte.eq(prefix.word_select(tx_index[:3], 8))
                with m.Elif(tx_index < payload_end):
                    m.d.comb += byte.eq(rd.data)
                with m.Else():
                    crc_index = (tx_index - payload_end)[:2]
                    m.d.comb += byte.eq(frame_crc.crc.word_select(crc_index, 8))
                m.d.comb += [self.tx_data.eq(byte), self.tx_valid.eq(1)]
                m.d.comb += frame_crc.data.eq(byte)
                with m.If(self.tx_ready):
                    m.d.sync += tx_index.eq(tx_index + 1)
                    with m.If((tx_index >= len(SYNC)) & (tx_index < payload_end)):
                        m.d.comb += frame_crc.valid.eq(1)
                    with m.If(tx_index == payload_end + CRC_TRAILER.size - 1):
                        m.next = "SYNC0"

        return m

    def _refused_busy(self, c):
        """While a program runs: the requests that need what it uses (the engine's buffers,
        the model, the sequencer's program) are answered BUSY; IDENTIFY, STATUS, CLEAR,
        MEM_READ, a MEM_WRITE above the model, RESIDENT_WAIT and a replayed RUN_RESIDENT
        (the same seq as the run's) go on."""
        if not self.dram_bytes:
            return Const(0)
        opcode = c.header.opcode
        return self.seq_running & (
            (opcode == Opcode.WRITE)
            | (opcode == Opcode.READ)
            | (opcode == Opcode.RUN)
            | (opcode == Opcode.MODEL_COMMIT)
            | ((opcode == Opcode.MEM_WRITE) & (c.mem_write.addr < c.counters.model_bytes))
            | ((opcode == Opcode.RUN_RESIDENT) & (c.header.seq != c.run_seq))
        )

    def _resident_requests(self, m, c):
        """CHECK's case for the resident-mode opcodes: refused while the DRAM is not ready (before
        its init/calibration, or it failed); else validated, then handed over as a command."""
        cfg = self.config
        command = self.seq_command  # registered: set here, handed over in SUBMIT
        resident = (
            Opcode.MEM_WRITE,
            Opcode.MEM_READ,
            Opcode.MODEL_COMMIT,
            Opcode.RUN_RESIDENT,
            Opcode.RESIDENT_WAIT,
        )
        with m.Case(*resident):
            with m.If(~self.dram_ready):
                c.respond(Status.DRAM_NOT_READY)
            with m.Else(), m.Switch(c.header.opcode):
                with m.Case(Opcode.MEM_WRITE):
                    with m.If(c.header.length < MEM_WRITE_REQUEST.size):
                        c.respond(Status.BAD_LENGTH)
                    with m.Elif(c.header.length == MEM_WRITE_REQUEST.size):
                        c.respond(Status.OK)
                    with m.Else():
                        # a write into the model: forget it
                        with m.If(c.mem_write.addr < c.counters.model_bytes):
                            m.d.sync += [
                                c.counters.model_loaded.eq(0),
                                c.counters.model_bytes.eq(0),
                            ]
                        m.d.sync += [
                            command.eq(0),
                            command.opcode.eq(Command.STORE),
                            command.space.eq(HostSpace.LINK),
                            command.length.eq(c.header.length - MEM_WRITE_REQUEST.size),
                            command.dram_addr.eq(c.mem_write.addr),
                            command.buffer_offset.eq(MEM_WRITE_REQUEST.size),
                            command.count.eq(1),
                        ]
                        m.next = "SUBMIT"
                with m.Case(Opcode.MEM_READ):
                    too_long = c.mem_read.count > cfg.max_payload - RESPONSE_STATUS.size
                    with m.If((c.header.length != MEM_READ_REQUEST.size) | too_long):
                        c.respond(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += [
                            command.eq(0),
                            command.opcode.eq(Command.LOAD),
                            command.space.eq(HostSpace.LINK),
                            command.length.eq(c.mem_read.count),
                            command.dram_addr.eq(c.mem_read.addr),
                            command.buffer_offset.eq(RESPONSE_STATUS.size),
                            command.count.eq(1),
                        ]
                        m.next = "SUBMIT"
                with m.Case(Opcode.MODEL_COMMIT):
                    with m.If(c.header.length != MODEL_COMMIT_REQUEST.size):
                        c.respond(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += [
                            c.counters.model_loaded.eq(0),
                            c.counters.model_bytes.eq(0),
                            c.counters.model_fingerprint.eq(0),
                            command.eq(0),
                            command.opcode.eq(Command.LOAD),
                            command.space.eq(HostSpace.CHECKSUM),
                            command.length.eq(c.commit.bytes),
                            command.count.eq(1),
                        ]
                        m.next = "SUBMIT"
                with m.Case(Opcode.RUN_RESIDENT):
                    run = c.run_request
                    model_end = c.counters.model_bytes
                    with m.If(c.header.length != RESIDENT_RUN_REQUEST.size):
                        c.respond(Status.BAD_LENGTH)
                    with m.Elif(c.counters.model_loaded == 0):
                        c.respond(Status.NO_MODEL)
                    with m.Elif(self.seq_running):  # the replay of the running one's request
                        c.respond(Status.OK)
                    with m.Elif((run.input_addr < model_end) | (run.output_addr < model_end)):
                        c.respond(Status.BAD_ADDRESS)
                    with m.Else():
                        m.d.sync += [
                            self.seq_input_base.eq(run.input_addr),
                            self.seq_output_base.eq(run.output_addr),
                            c.run_seq.eq(c.header.seq),
                        ]
                        m.next = "SEQ_START"
                with m.Case(Opcode.RESIDENT_WAIT):
                    with m.If(c.header.length != 0):
                        c.respond(Status.BAD_LENGTH)
                    with m.Elif(c.counters.model_loaded == 0):
                        c.respond(Status.NO_MODEL)
                    with m.Else():
                        m.next = "PROGRAM_WAIT"

    def _resident_states(self, m, c):
        """The states that wait for the sequencer, and the frame buffer as its LINK space."""
        # reads of the LINK space answer one cycle later, as the engine's buffers do
        m.d.sync += [self.host_read_data.eq(c.rd.data), self.host_read_valid.eq(self.host_read_en)]
        with m.State("SUBMIT"):  # between two program commands, or while its engine runs
            m.d.comb += [self.seq_submit.eq(1), c.checksum.start.eq(1)]
            with m.If(self.seq_submit_taken):
                m.next = "SEQ_WAIT"
        with m.State("SEQ_START"):  # the run goes on alone; RESIDENT_WAIT answers its end
            m.d.comb += self.seq_start.eq(1)
            c.respond(Status.OK)
        with m.State("PROGRAM_WAIT"):
            with m.If(~self.seq_running):
                c.fill(Mux(c.run_failed, Status.DEVICE_ERROR, Status.OK))
        with m.State("SEQ_WAIT"):
            # the sequencer owns the frame buffer: LOADs into LINK write it, STOREs read it
            to_link = self.host_write_en & (self.host_write_space == HostSpace.LINK)
            m.d.comb += [
                c.wr.addr.eq(self.host_write_addr),
                c.wr.data.eq(self.host_write_data),
                c.wr.en.eq(to_link),
                c.rd.addr.eq(self.host_read_addr),
            ]
            with m.If(self.seq_submit_done):
                failed = self.seq_submit_error != SequencerError.NONE
                with m.If(failed):
                    m.d.sync += [
                        c.counters.sequencer_error.eq(self.seq_submit_error),
                        c.counters.sequencer_pc.eq(0),  # a host transfer
                    ]
                with m.Switch(c.header.opcode):
                    with m.Case(Opcode.MEM_READ):
                        with m.If(failed):
                            c.respond(Status.DEVICE_ERROR)
                        with m.Else():
                            m.d.sync += [
                                c.status.eq(Status.OK),
                                c.resp_len.eq(RESPONSE_STATUS.size + c.mem_read.count),
                            ]
                            m.next = "RESPOND"
                    with m.Case(Opcode.MODEL_COMMIT):
                        match = ~failed & (c.checksum.crc == c.commit.crc)
                        with m.If(match):
                            m.d.sync += [
                                c.counters.model_loaded.eq(1),
                                c.counters.model_bytes.eq(c.commit.bytes),
                                c.counters.model_fingerprint.eq(c.commit.fingerprint),
                                c.program_addr.eq(c.commit.program_addr),
                            ]
                        c.fill(
                            Mux(
                                failed, Status.DEVICE_ERROR, Mux(match, Status.OK, Status.BAD_MODEL)
                            )
                        )
                    with m.Default():  # MEM_WRITE
                        c.respond(Mux(failed, Status.DEVICE_ERROR, Status.OK))

"""The link's resident model state (resident mode: a device with DRAM).

What the DRAM holds for the host (the model: loaded, its bytes, fingerprint and program address,
checked by a CRC-32 over what DRAM returns), the sequencer commands that move a request's bytes
between the frame buffer and DRAM, and the end of a program run (its refusal, if any). The command
decoder (:mod:`hw.soc.link.decoder`) drives it through :func:`resident_signature`; its other ports
(:func:`resident_ports`) are the link's ``sequencer``, ``dram_*`` and ``host_*`` ports.
"""

from __future__ import annotations

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import HostSpace
from fpga.spec.commands import Opcode as Command
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import transfer_bytes
from fpga.spec.protocol import (
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
    RESIDENT_RUN_REQUEST,
    RESIDENT_RUN_RESPONSE,
    RESPONSE_STATUS,
    STATUS_RESPONSE,
    DramState,
)
from hw.engine.ports import read_signature, write_signature
from hw.soc.link.layouts import (
    FRAME_CRC,
    HEADER,
    REQUEST_BYTES,
    frame_buffer_port,
    request_view,
    struct_layout,
)
from hw.soc.sequencer import SequencerError, control_signature

#: the STATUS fields the resident model state keeps (the rest are the decoder's counters)
MODEL_STATUS_FIELDS = (
    "model_loaded",
    "model_bytes",
    "model_fingerprint",
    "sequencer_error",
    "sequencer_pc",
    "dram_state",
    "running",
)
MODEL_STATUS = struct_layout(STATUS_RESPONSE, MODEL_STATUS_FIELDS)


def resident_ports(config: AcceleratorConfig) -> dict:
    """The link's resident-mode ports (a ``depth``-byte frame buffer): the sequencer's, the DRAM
    controller's state, and the sequencer's transfers to the link's :class:`HostSpace` s."""
    return {
        # the sequencer's program and submitted commands (hw.soc.sequencer.control_signature)
        "sequencer": Out(control_signature()),
        "dram_ready": In(1, init=1),  # the DRAM controller is initialized
        "dram_failed": In(1),  # its init/calibration failed
        # the sequencer's buffer ports where they address a HostSpace (hw.soc.arbiter)
        "host_write": In(write_signature(config)),
        "host_read": In(read_signature(config)),
    }


def resident_signature(depth: int, block_bytes: int = 1) -> wiring.Signature:
    """The command decoder's side of the resident model state (``Out``: the decoder drives).

    In the cycle the decoder takes a request (``header``, ``request``: its header and first
    payload bytes) it may strobe one of ``store`` (MEM_WRITE: the payload after the request
    header to DRAM), ``load`` (MEM_READ: DRAM into the buffer after the status byte), ``commit``
    (MODEL_COMMIT: the model is forgotten and read back through the checksum) or ``run``
    (RUN_RESIDENT: the run's addresses and seq are kept); ``start`` starts the program, ``clear``
    clears the sequencer's last refusal. A transfer ends with ``done`` (``failed``: refused;
    ``match``: a commit's checksum matched, the model is loaded), the buffer being the model's
    (``buffer_owned``, ``wr_*``, ``rd_addr``; ``rd_data``: the buffer's read data) until then.
    ``engine_error``: a program ended in an engine error (one cycle)."""
    return wiring.Signature(
        {
            "header": Out(HEADER),
            "request": Out(8 * REQUEST_BYTES),
            "store": Out(1),
            "load": Out(1),
            "commit": Out(1),
            "run": Out(1),
            "start": Out(1),
            "clear": Out(1),
            "dram_ready": In(1),
            "running": In(1),
            "run_seq": In(8),
            "run_failed": In(1),
            "done": In(1),
            "failed": In(1),
            "match": In(1),
            "engine_error": In(1),
            "status": In(MODEL_STATUS),
            "commit_response": In(struct_layout(MODEL_COMMIT_RESPONSE)),
            "run_response": In(struct_layout(RESIDENT_RUN_RESPONSE)),
            "buffer_owned": In(1),
            **frame_buffer_port(depth, block_bytes),
        }
    )


class ResidentModel(wiring.Component):
    """The model DRAM holds, the sequencer commands of the host's transfers, the end of a program
    run. ``control``: the command decoder's (:func:`resident_signature`); the rest are the link's
    resident ports (:func:`resident_ports`): one LOAD/STORE per DRAM transfer, handed to the
    sequencer with the frame buffer as the :class:`HostSpace` ``LINK`` and ``CHECKSUM`` (a
    CRC-32 over a model read back)."""

    def __init__(self, config: AcceleratorConfig, depth: int):
        self.depth = depth
        super().__init__(
            {
                **resident_ports(config),
                "control": In(resident_signature(depth, transfer_bytes(config))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        control = self.control
        status = control.status
        m.submodules.checksum = checksum = FRAME_CRC.create()
        commit = request_view(MODEL_COMMIT_REQUEST, control.request)
        to_checksum = self.host_write.valid & (self.host_write.payload.space == HostSpace.CHECKSUM)
        failed = self.sequencer.submit_error != SequencerError.NONE
        run = control.run_response
        m.d.comb += [
            checksum.data.eq(self.host_write.payload.data),
            checksum.valid.eq(to_checksum),
            control.commit_response.crc.eq(checksum.crc),
            run.cycles.eq(self.sequencer.cycles),
            run.engine_cycles.eq(self.sequencer.engine_cycles),
            run.dma_wait_cycles.eq(self.sequencer.dma_wait_cycles),
            run.host_cycles.eq(self.sequencer.host_cycles),
            run.error_code.eq(self.sequencer.error_code),
            run.pc.eq(self.sequencer.pc),
            control.dram_ready.eq(self.dram_ready),
            control.running.eq(self.sequencer.running),
            control.failed.eq(failed),
            control.match.eq(~failed & (checksum.crc == commit.crc)),
            self.sequencer.start.eq(control.start),
        ]
        dram_state = Mux(
            self.dram_failed,
            DramState.FAILED,
            Mux(self.dram_ready, DramState.READY, DramState.INITIALIZING),
        )
        m.d.sync += [status.dram_state.eq(dram_state), status.running.eq(self.sequencer.running)]
        # reads of the LINK space answer one cycle later, as the engine's buffers do (the frame
        # buffer is a block RAM: its data is the address's of the cycle before)
        m.d.comb += [
            self.host_read.response.payload.data.eq(control.rd_data),
            self.host_read.response.payload.block.eq(control.rd_block),
        ]
        m.d.sync += self.host_read.response.valid.eq(self.host_read.request.valid)
        self._program_end(m)
        self._requests(m)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(control.store | control.load | control.commit):
                    m.next = "SUBMIT"
            with m.State("SUBMIT"):  # between two program commands, or while its engine runs
                m.d.comb += [self.sequencer.submit.eq(1), checksum.start.eq(1)]
                with m.If(self.sequencer.submit_taken):
                    m.next = "SEQ_WAIT"
            with m.State("SEQ_WAIT"):
                # the sequencer owns the frame buffer: LOADs into LINK write it, STOREs read it
                to_link = self.host_write.valid & (self.host_write.payload.space == HostSpace.LINK)
                m.d.comb += [
                    control.wr_addr.eq(self.host_write.payload.addr),
                    control.wr_data.eq(self.host_write.payload.data),
                    control.wr_en.eq(to_link),
                    control.rd_addr.eq(self.host_read.request.payload.addr),
                    control.done.eq(self.sequencer.submit_done),
                ]
                with m.If(self.sequencer.submit_done):
                    with m.If(failed):
                        m.d.sync += [
                            status.sequencer_error.eq(self.sequencer.submit_error),
                            status.sequencer_pc.eq(0),  # a host transfer
                        ]
                    checked = self.sequencer.command.space == HostSpace.CHECKSUM  # a MODEL_COMMIT
                    with m.If(checked & control.match):
                        m.d.sync += [
                            status.model_loaded.eq(1),
                            status.model_bytes.eq(commit.bytes),
                            status.model_fingerprint.eq(commit.fingerprint),
                            self.sequencer.program_addr.eq(commit.program_addr),
                        ]
                    m.next = "IDLE"
        m.d.comb += control.buffer_owned.eq(fsm.ongoing("SEQ_WAIT"))

        with m.If(control.clear):
            m.d.sync += [status.sequencer_error.eq(0), status.sequencer_pc.eq(0)]
        return m

    def _program_end(self, m):
        """A program's end, whatever the link is doing then (it serves frames while the program
        runs): what RESIDENT_WAIT and STATUS report."""
        status = self.control.status
        with m.If(self.sequencer.done):
            failed = self.sequencer.error_code != SequencerError.NONE
            m.d.sync += self.control.run_failed.eq(failed)
            with m.If(failed):
                m.d.sync += [
                    status.sequencer_error.eq(self.sequencer.error_code),
                    status.sequencer_pc.eq(self.sequencer.pc),
                ]
        engine = self.sequencer.done & (self.sequencer.error_code == SequencerError.ENGINE)
        m.d.comb += self.control.engine_error.eq(engine)

    def _requests(self, m):
        """The decoder's strobes: the sequencer command of a transfer (registered: handed over
        in SUBMIT), the model forgotten, a run's addresses kept."""
        control = self.control
        status = control.status
        command = self.sequencer.command
        mem_write = request_view(MEM_WRITE_REQUEST, control.request)
        mem_read = request_view(MEM_READ_REQUEST, control.request)
        commit = request_view(MODEL_COMMIT_REQUEST, control.request)
        run = request_view(RESIDENT_RUN_REQUEST, control.request)

        def forget():
            return [status.model_loaded.eq(0), status.model_bytes.eq(0)]

        with m.If(control.store):
            with m.If(mem_write.addr < status.model_bytes):  # a write into the model
                m.d.sync += forget()
            m.d.sync += [
                command.eq(0),
                command.opcode.eq(Command.STORE),
                command.space.eq(HostSpace.LINK),
                command.length.eq(control.header.length - MEM_WRITE_REQUEST.size),
                command.dram_addr.eq(mem_write.addr),
                command.buffer_offset.eq(MEM_WRITE_REQUEST.size),
                command.count.eq(1),
            ]
        with m.If(control.load):
            m.d.sync += [
                command.eq(0),
                command.opcode.eq(Command.LOAD),
                command.space.eq(HostSpace.LINK),
                command.length.eq(mem_read.count),
                command.dram_addr.eq(mem_read.addr),
                command.buffer_offset.eq(RESPONSE_STATUS.size),
                command.count.eq(1),
            ]
        with m.If(control.commit):
            m.d.sync += forget() + [
                status.model_fingerprint.eq(0),
                command.eq(0),
                command.opcode.eq(Command.LOAD),
                command.space.eq(HostSpace.CHECKSUM),
                command.length.eq(commit.bytes),
                command.count.eq(1),
            ]
        with m.If(control.run):
            m.d.sync += [
                self.sequencer.input_base.eq(run.input_addr),
                self.sequencer.output_base.eq(run.output_addr),
                control.run_seq.eq(control.header.seq),
            ]

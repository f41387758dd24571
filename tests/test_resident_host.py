"""The host's resident mode (host.driver.Device.load_model/run_resident, host.classify --mode)
against a Python stand-in for the device: no simulator needed.

``FakeResidentBoard`` is a transport that answers protocol v5 as docs/protocol.md describes the
device: a DRAM bytearray, MEM_WRITE/MEM_READ, MODEL_COMMIT (CRC-32 over DRAM), RUN_RESIDENT
starting a run that RESIDENT_WAIT ends (the command list run by
``fpga.compiler.reference.run_commands`` on ``fpga.compiler.emulator.EngineEmulator`` with the run's
input and output slots), BUSY while it runs. It drops frames whose CRC fails (the host must time out
and retry). The e2e tests run the same host code against the simulated board's RTL
(tests/e2e/test_resident.py).
"""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from fpga.compiler.emulator import EngineEmulator
from fpga.compiler.program import compile_network
from fpga.compiler.resident import compile_resident
from fpga.spec import golden
from fpga.spec.commands import COMMAND_BYTES, ResidentError, command, pack_commands
from fpga.spec.commands import Opcode as Cmd
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.errors import UserError, run_cli
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    FRAME_HEADER,
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
    RESIDENT_RUN_REQUEST,
    RESIDENT_RUN_RESPONSE,
    STATUS_RESPONSE,
    SYNC,
    DramState,
    FrameError,
    FrameParser,
    LinkKind,
    LinkRate,
    Opcode,
    Status,
    crc32,
    encode_frame,
    identify_payload,
)
from fpga.toolflow import quant
from host.classify import choose_mode, predicted_images_per_s
from host.driver import (
    BadModel,
    Device,
    DeviceBusy,
    DeviceError,
    DramNotReady,
    LinkError,
    NoDram,
    NoModel,
)

SIZE = 64  # v1.1 at a reduced input size (as tests/test_resident.py)
DRAM = 16 << 20  # the stand-in's DRAM (the simulated board has 256 MiB)
SEQ_DRAM_RANGE = 2  # hw.soc.sequencer.SequencerError.DRAM_RANGE (tests may not need the gateware)


class FakeResidentBoard:
    """A transport that is a protocol-v5 device with ``dram_bytes`` of DRAM (0: none).

    RUN_RESIDENT starts a run and answers at once; the stand-in decides when it completes: on
    RESIDENT_WAIT, or (``run_frames`` K) before the K-th frame received after the start. The
    program executes when the run completes (``fpga.compiler.reference.run_commands`` with the run's
    input and output addresses), so a host that wrote into the running slot or read the
    running slot's output would get wrong logits. While a run goes: BUSY for WRITE/READ/RUN,
    MODEL_COMMIT, a MEM_WRITE into the model and a RUN_RESIDENT with another seq; a replayed
    RUN_RESIDENT (same seq) answers OK without a second start."""

    def __init__(self, config=DEFAULT_CONFIG, dram_bytes: int = DRAM):
        self.config = config
        self.dram_bytes = dram_bytes
        self.dram = bytearray(dram_bytes)
        self.engine = EngineEmulator(config)
        self.parser = FrameParser(config.max_payload)
        self.pending = bytearray()
        self.frames: list[Opcode] = []  # opcodes of the good frames received, in order
        self.model = {"loaded": 0, "bytes": 0, "fingerprint": bytes(8), "program_addr": 0}
        self.sequencer = {"error": 0, "pc": 0}
        self.crc_errors = 0
        self.corrupt_dram_at: int | None = None  # a stuck DRAM byte: stores ~value there
        self.run_error: int | None = None  # the run fails with this sequencer error
        self.dram_state = DramState.READY if dram_bytes else DramState.NONE
        self.run_frames: int | None = None  # a run completes K frames after its start
        self.running: dict | None = None  # seq, input, output, frames left, host bytes
        self.last_run = (Status.OK, run_response())  # what RESIDENT_WAIT answers
        self.starts: list[tuple[int, int]] = []  # (input, output) of every run started
        self.during_run: list[Opcode] = []  # opcodes received while a run was going
        self.drop: list[Opcode] = []  # drop the response to the next frame of each opcode

    # -- transport -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.parser.feed(data)
        while True:
            try:
                frame = self.parser.pop()
            except FrameError:
                self.crc_errors += 1
                continue
            if frame is None:
                return
            opcode = Opcode(frame.opcode)
            self.frames.append(opcode)
            if self.running is not None and self.running["left"] is not None:
                self.running["left"] -= 1
                if self.running["left"] <= 0:
                    self.complete()
            if self.running is not None:
                self.during_run.append(opcode)
            status, body = self.handle(opcode, frame.payload, frame.seq)
            if opcode in self.drop:
                self.drop.remove(opcode)
                continue
            reply = bytes([status]) + body
            self.pending += encode_frame(frame.seq, frame.opcode | 0x80, reply)

    def read(self, size: int, timeout: float) -> bytes:
        out = bytes(self.pending[:size])
        del self.pending[:size]
        return out

    def close(self) -> None:
        pass

    # -- the device ----------------------------------------------------------------------------
    def refuse(self, code: int, pc: int = 0) -> tuple[int, bytes]:
        self.sequencer = {"error": code, "pc": pc}
        return Status.DEVICE_ERROR, b""

    def forget(self) -> None:
        self.model = {**self.model, "loaded": 0}

    def busy(self, opcode: Opcode, payload: bytes, seq: int) -> bool:
        """Whether a running program refuses this request (hw.soc.link's list)."""
        if self.running is None:
            return False
        if opcode in (Opcode.WRITE, Opcode.READ, Opcode.RUN, Opcode.MODEL_COMMIT):
            return True
        if opcode == Opcode.MEM_WRITE:
            return MEM_WRITE_REQUEST.unpack(payload)["addr"] < self.model["bytes"]
        return opcode == Opcode.RUN_RESIDENT and seq != self.running["seq"]

    def handle(self, opcode: Opcode, payload: bytes, seq: int = 0) -> tuple[int, bytes]:
        if opcode == Opcode.IDENTIFY:
            return Status.OK, identify_payload(self.config, dram_bytes=self.dram_bytes)
        if opcode == Opcode.STATUS:
            return Status.OK, STATUS_RESPONSE.pack(
                frames_ok=len(self.frames),
                crc_errors=self.crc_errors,
                framing_errors=0,
                timeouts=0,
                bad_opcodes=0,
                engine_errors=0,
                model_loaded=self.model["loaded"],
                model_bytes=self.model["bytes"],
                model_fingerprint=self.model["fingerprint"],
                sequencer_error=self.sequencer["error"],
                sequencer_pc=self.sequencer["pc"],
                dram_state=self.dram_state,
                running=int(self.running is not None),
            )
        if self.busy(opcode, payload, seq):
            return Status.BUSY, b""
        if opcode in (Opcode.WRITE, Opcode.READ, Opcode.RUN):
            return Status.BAD_OPCODE, b""  # the stand-in does only resident mode
        if not self.dram_bytes:
            return Status.BAD_OPCODE, b""
        if self.dram_state != DramState.READY:
            return Status.DRAM_NOT_READY, b""
        if opcode == Opcode.MEM_WRITE:
            addr = MEM_WRITE_REQUEST.unpack(payload)["addr"]
            data = payload[MEM_WRITE_REQUEST.size :]
            if addr + len(data) > self.dram_bytes:
                return self.refuse(SEQ_DRAM_RANGE)
            if addr < self.model["bytes"]:
                self.forget()
            self.dram[addr : addr + len(data)] = data
            at = self.corrupt_dram_at
            if at is not None and addr <= at < addr + len(data):
                self.dram[at] ^= 0xFF
            if self.running is not None:
                self.running["host"] += len(data)
            return Status.OK, b""
        if opcode == Opcode.MEM_READ:
            req = MEM_READ_REQUEST.unpack(payload)
            addr, count = req["addr"], req["count"]
            if addr + count > self.dram_bytes:
                return self.refuse(SEQ_DRAM_RANGE)
            if self.running is not None:
                self.running["host"] += count
            return Status.OK, bytes(self.dram[addr : addr + count])
        if opcode == Opcode.MODEL_COMMIT:
            req = MODEL_COMMIT_REQUEST.unpack(payload)
            self.forget()
            if req["bytes"] > self.dram_bytes:
                self.refuse(SEQ_DRAM_RANGE)
                return Status.DEVICE_ERROR, MODEL_COMMIT_RESPONSE.pack(crc=0)
            crc = crc32(bytes(self.dram[: req["bytes"]]))
            if crc != req["crc"]:
                return Status.BAD_MODEL, MODEL_COMMIT_RESPONSE.pack(crc=crc)
            self.model = {
                "loaded": 1,
                "bytes": req["bytes"],
                "fingerprint": req["fingerprint"],
                "program_addr": req["program_addr"],
            }
            return Status.OK, MODEL_COMMIT_RESPONSE.pack(crc=crc)
        if opcode == Opcode.RUN_RESIDENT:
            if len(payload) != RESIDENT_RUN_REQUEST.size:
                return Status.BAD_LENGTH, b""
            if not self.model["loaded"]:
                return Status.NO_MODEL, b""
            if self.running is not None:  # the replay of the running one's request
                return Status.OK, b""
            req = RESIDENT_RUN_REQUEST.unpack(payload)
            end = self.model["bytes"]
            if req["input_addr"] < end or req["output_addr"] < end:
                return Status.BAD_ADDRESS, b""
            self.starts.append((req["input_addr"], req["output_addr"]))
            self.running = {
                "seq": seq,
                "input": req["input_addr"],
                "output": req["output_addr"],
                "left": self.run_frames,
                "host": 0,
            }
            return Status.OK, b""
        if opcode == Opcode.RESIDENT_WAIT:
            if payload:
                return Status.BAD_LENGTH, b""
            if not self.model["loaded"]:
                return Status.NO_MODEL, b""
            if self.running is not None:
                self.complete()
            return self.last_run
        return Status.BAD_OPCODE, b""

    def complete(self) -> None:
        """The running program ends: execute it, keep its answer for RESIDENT_WAIT."""
        run, self.running = self.running, None
        self.last_run = self.execute(run)

    def execute(self, run: dict) -> tuple[int, bytes]:
        from fpga.compiler.reference import run_commands

        start = self.model["program_addr"]
        if self.run_error is not None:
            self.sequencer = {"error": self.run_error, "pc": start}
            return Status.DEVICE_ERROR, run_response(cycles=1, error_code=self.run_error, pc=start)
        executed = []
        try:
            stats = run_commands(
                self.dram,
                self.engine,
                start,
                after=lambda i, rec: executed.append(i),
                input_base=run["input"],
                output_base=run["output"],
            )
        except ResidentError:
            pc = start + len(executed) * COMMAND_BYTES
            self.sequencer = {"error": SEQ_DRAM_RANGE, "pc": pc}
            return Status.DEVICE_ERROR, run_response(cycles=1, error_code=SEQ_DRAM_RANGE, pc=pc)
        # made-up but distinct costs: the host only splits and reports them
        dma = 20 * stats.dma_requests
        other = 24 * stats.commands + stats.loaded_bytes + stats.stored_bytes
        return Status.OK, run_response(
            cycles=stats.engine_cycles + dma + other,
            engine_cycles=stats.engine_cycles,
            dma_wait_cycles=dma,
            host_cycles=run["host"],
            pc=start + (stats.commands - 1) * COMMAND_BYTES,
        )


def run_response(**fields) -> bytes:
    """A RESIDENT_WAIT response payload; fields left out are 0."""
    return RESIDENT_RUN_RESPONSE.pack(
        **{name: fields.get(name, 0) for name in RESIDENT_RUN_RESPONSE.names}
    )


def sent_opcode(data: bytes) -> int | None:
    """The opcode of the frame ``data`` starts with (the driver writes a frame per call)."""
    head = len(SYNC) + FRAME_HEADER.size
    if data[: len(SYNC)] != SYNC or len(data) < head:
        return None
    return FRAME_HEADER.unpack(data[len(SYNC) :])["opcode"]


class CorruptOneFrame:
    """A transport wrapper that flips one byte of the ``nth`` frame the host sends with
    ``opcode`` (its CRC then fails at the device, which drops it or answers BAD_CRC)."""

    def __init__(self, transport, opcode: Opcode, nth: int = 0, at: int = -6):
        self.transport, self.opcode, self.nth, self.at = transport, opcode, nth, at
        self.seen = 0
        self.flipped = 0

    def write(self, data: bytes) -> None:
        # the driver writes one whole frame per call
        if sent_opcode(data) == self.opcode:
            if self.seen == self.nth:
                data = bytearray(data)
                data[self.at] ^= 0x40
                data = bytes(data)
                self.flipped += 1
            self.seen += 1
        self.transport.write(data)

    def read(self, size: int, timeout: float) -> bytes:
        return self.transport.read(size, timeout)

    def close(self) -> None:
        self.transport.close()

    @property
    def baudrate(self):
        return getattr(self.transport, "baudrate", 0)


def fake_device(board=None, **kwargs) -> Device:
    device = Device(board or FakeResidentBoard(), timeout=0.3, retries=4, **kwargs)
    device.identify()
    return device


@pytest.fixture(scope="module")
def small():
    """v1.1 at 64, huffman and indices programs and their resident images, and one image."""
    network = quant.quantize_network("v1.1", size=SIZE)
    x = network.quantize_input(preprocess(bundled_photos()[0], SIZE))
    images = {}
    for mode in ("indices", "huffman"):
        program = compile_network(network, DEFAULT_CONFIG, weights_mode=mode)
        images[mode] = compile_resident(program, dram_size=DRAM, input_size=SIZE)
    expected = golden.run_network(network, x, keep=False)[network.output.name]
    return network, x, images, expected


# -- MEM_WRITE / MEM_READ -----------------------------------------------------------------------
def test_mem_write_and_read_are_chunked_to_the_frame_payload():
    board = FakeResidentBoard()
    device = fake_device(board)
    chunk = DEFAULT_CONFIG.max_payload - MEM_WRITE_REQUEST.size
    data = np.random.default_rng(1).integers(0, 256, 3 * chunk + 5, dtype=np.uint8).tobytes()
    board.frames.clear()
    device.mem_write(1000, data)
    assert board.frames == [Opcode.MEM_WRITE] * 4
    assert bytes(board.dram[1000 : 1000 + len(data)]) == data
    assert board.dram[999] == 0 and board.dram[1000 + len(data)] == 0
    board.frames.clear()
    assert device.mem_read(1000, len(data)) == data
    per_read = DEFAULT_CONFIG.max_payload - 1  # status byte + data fill a payload
    assert board.frames == [Opcode.MEM_READ] * -(-len(data) // per_read)
    assert device.mem_read(0, 0) == b""


def test_a_transfer_outside_the_dram_is_a_device_error_naming_the_code():
    device = fake_device()
    with pytest.raises(DeviceError, match=f"sequencer error {SEQ_DRAM_RANGE}") as caught:
        device.mem_write(DRAM - 4, bytes(8))
    assert "host transfer" in str(caught.value)
    with pytest.raises(DeviceError, match="MEM_READ"):
        device.mem_read(DRAM - 1, 2)


@pytest.mark.parametrize(
    "state,message",
    [
        (DramState.INITIALIZING, r"its DRAM is not initialized yet \(initializing\): retry"),
        (DramState.FAILED, r"its DRAM init/calibration FAILED \(LiteDRAM init_error\)"),
    ],
)
def test_a_dram_that_is_not_ready_is_one_clear_error_and_not_retried(state, message):
    board = FakeResidentBoard()
    board.dram_state = state
    device = fake_device(board)
    board.frames.clear()
    with pytest.raises(
        DramNotReady, match=f"MEM_WRITE: the device refused resident mode: {message}"
    ):
        device.mem_write(0, b"abcd")
    assert board.frames == [Opcode.MEM_WRITE, Opcode.STATUS]  # final: not retried
    assert isinstance(DramNotReady("x"), UserError)  # the CLI prints one line, exit 2


def test_a_device_without_dram_refuses_resident_mode_up_front(small):
    _, x, images, _ = small
    board = FakeResidentBoard(dram_bytes=0)
    device = fake_device(board)
    for call in (
        lambda: device.mem_write(0, b"x"),
        lambda: device.mem_read(0, 1),
        lambda: device.load_model(images["indices"]),
        lambda: device.run_resident(images["indices"], x),
    ):
        with pytest.raises(NoDram, match="--mode streamed"):
            call()
    assert set(board.frames) == {Opcode.IDENTIFY}  # nothing was sent


# -- mode choice --------------------------------------------------------------------------------
def test_mode_defaults_to_resident_only_with_dram():
    with_dram = fake_device().info
    without = fake_device(FakeResidentBoard(dram_bytes=0)).info
    assert (with_dram.dram_bytes, without.dram_bytes) == (DRAM, 0)  # v3 IDENTIFY
    assert choose_mode(None, with_dram) == "resident"
    assert choose_mode(None, without) == "streamed"
    assert choose_mode("streamed", with_dram) == "streamed"
    with pytest.raises(UserError, match="--mode resident needs a board with DRAM"):
        choose_mode("resident", without)


UART = LinkRate(LinkKind.UART, 12_000_000)


def test_predicted_images_per_s_with_overlap_is_the_longer_of_compute_and_link():
    """Overlapped (run_resident_many's steady state): the period is max(compute, link)."""
    clock = 100e6
    # the device dominates: 1 s of cycles, 0.1 s of link
    link = UART.seconds(120_000, 100)
    assert predicted_images_per_s(100_000_000, clock, link, overlap=True) == 1.0
    assert predicted_images_per_s(100_000_000, clock, link) == pytest.approx(1 / 1.1)
    # the link dominates: 0.01 s of cycles, 1 s of link
    link = UART.seconds(1_200_000, 1000)
    assert predicted_images_per_s(1_000_000, clock, link, overlap=True) == 1.0
    assert predicted_images_per_s(1_000_000, clock, link) == pytest.approx(1 / 1.01)
    # balanced: overlap doubles the rate
    link = UART.seconds(600_000, 10)
    assert predicted_images_per_s(50_000_000, clock, link, overlap=True) == pytest.approx(
        2 * predicted_images_per_s(50_000_000, clock, link)
    )


def test_predicted_images_per_s_adds_compute_and_8n1_link_time():
    """The one formula (bench/resident.py calls it too): a 12 Mbaud 8N1 UART moves 1.2 MB/s
    whatever the frames; compute and transfer do not overlap."""
    one_second = 100_000_000
    assert UART.seconds(1_200_000, 1) == UART.seconds(1_200_000, 1000) == pytest.approx(1.0)
    assert predicted_images_per_s(one_second, 100e6, UART.seconds(1_200_000, 1)) == pytest.approx(
        0.5
    )
    assert predicted_images_per_s(one_second, 100e6, 0.0) == pytest.approx(1.0)
    # resident: ~160 KB per image makes the device's cycles matter
    assert predicted_images_per_s(13_776_660, 100e6, UART.seconds(160_000, 320)) > 3


# -- model load ---------------------------------------------------------------------------------
def test_load_model_writes_commits_and_is_skipped_when_the_device_holds_it(small):
    _, _, images, _ = small
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    first = device.load_model(image)
    assert first.loaded and first.link_bytes > image.load_size
    assert board.model["loaded"] and board.model["bytes"] == image.commit_size
    assert board.model["fingerprint"].hex() == image.fingerprint()
    assert board.model["program_addr"] == image.program_address
    assert bytes(board.dram[: image.load_size]) == image.load_bytes()
    assert board.frames.count(Opcode.MODEL_COMMIT) == 1
    # again: one STATUS, nothing written
    board.frames.clear()
    again = device.load_model(image)
    assert not again.loaded and board.frames == [Opcode.STATUS]
    assert again.link_bytes < 200
    # a new session (a new host process) finds the model too
    assert not fake_device(board).load_model(image).loaded
    # force: written again
    board.frames.clear()
    assert device.load_model(image, force=True).loaded
    assert Opcode.MEM_WRITE in board.frames and Opcode.STATUS not in board.frames


def test_another_model_replaces_the_first(small):
    _, _, images, _ = small
    board = FakeResidentBoard()
    device = fake_device(board)
    assert device.load_model(images["indices"]).loaded
    assert images["huffman"].fingerprint() != images["indices"].fingerprint()
    assert device.load_model(images["huffman"]).loaded
    assert board.model["fingerprint"].hex() == images["huffman"].fingerprint()
    assert device.load_model(images["indices"]).loaded  # and back


def test_a_model_whose_crc_differs_on_the_device_is_refused_naming_both(small):
    _, x, images, _ = small
    image = images["indices"]
    board = FakeResidentBoard()
    board.corrupt_dram_at = image.program_address + 5  # a stuck DRAM byte
    device = fake_device(board)
    with pytest.raises(BadModel) as caught:
        device.load_model(image)
    host = crc32(image.load_bytes()[: image.commit_size])
    assert f"{host:#010x}" in str(caught.value)
    blob = bytearray(image.load_bytes()[: image.commit_size])
    blob[image.program_address + 5] ^= 0xFF
    assert f"{crc32(bytes(blob)):#010x}" in str(caught.value)
    assert not board.model["loaded"]
    with pytest.raises(NoModel):
        device.run_resident(image, x)


# -- runs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
def test_run_resident_equals_golden_and_accounts_its_cycles_and_bytes(small, weights_mode):
    _, x, images, expected = small
    image = images[weights_mode]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    board.frames.clear()
    logits, stats = device.run_resident(image, x)
    np.testing.assert_array_equal(logits, expected)
    assert (
        stats["cycles"] == stats["engine_cycles"] + stats["dma_wait_cycles"] + stats["other_cycles"]
    )
    assert stats["engine_cycles"] == sum(image.program.predicted_cycles().values())
    assert stats["minimum_link_bytes"] == image.input_bytes() + image.output_bytes()
    assert stats["minimum_link_bytes"] < stats["link_bytes"] < 1.1 * stats["minimum_link_bytes"]
    assert stats["overlapped"] is False and stats["host_cycles"] == 0  # nothing during the run
    assert board.frames == [Opcode.MEM_WRITE] * board.frames.count(Opcode.MEM_WRITE) + [
        Opcode.RUN_RESIDENT,
        Opcode.RESIDENT_WAIT,
        *[Opcode.MEM_READ] * board.frames.count(Opcode.MEM_READ),
    ]
    assert board.starts == [(image.input_address(0), image.output_address(0))]
    # the model is still there: a second image needs no load
    assert not device.load_model(image).loaded


def test_run_without_a_model_is_a_clear_error(small):
    _, x, images, _ = small
    device = fake_device()
    with pytest.raises(NoModel, match="holds no model.*load the model first"):
        device.run_resident(images["indices"], x)


def test_an_interrupted_load_leaves_no_runnable_model_and_a_full_load_recovers(small):
    _, x, images, expected = small
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    # a new load that stops half way (no MODEL_COMMIT): the old model is forgotten
    device.mem_write(0, image.load_bytes()[: image.commit_size // 2])
    with pytest.raises(NoModel):
        device.run_resident(image, x)
    assert device.load_model(image).loaded  # STATUS says not loaded: written in full
    logits, _ = device.run_resident(image, x)
    np.testing.assert_array_equal(logits, expected)


def test_a_corrupted_mem_write_frame_is_retried_and_the_model_loads(small):
    _, x, images, expected = small
    image = images["huffman"]
    board = FakeResidentBoard()
    wrapper = CorruptOneFrame(board, Opcode.MEM_WRITE, nth=3)
    device = fake_device(wrapper)
    assert device.load_model(image).loaded
    assert wrapper.flipped == 1 and board.crc_errors >= 1 and device.retried >= 1
    # the flipped frame was a MEM_WRITE the device dropped; its retry arrived
    assert wrapper.seen == board.frames.count(Opcode.MEM_WRITE) + 1
    logits, _ = device.run_resident(image, x)
    np.testing.assert_array_equal(logits, expected)


def test_a_program_outside_the_dram_is_a_device_error_naming_the_command():
    board = FakeResidentBoard()
    device = fake_device(board)
    program = pack_commands(
        [
            command(Cmd.LOAD, BufferSpace.WEIGHT, length=16, dram_addr=0),
            command(Cmd.LOAD, BufferSpace.WEIGHT, length=16, dram_addr=DRAM - 8),
            command(Cmd.END),
        ]
    )
    addr = 4096
    device.mem_write(addr, program)
    size = addr + len(program)
    status, crc = device.commit_model(
        size, crc32(bytes(size - len(program)) + program), addr, "00" * 8
    )
    assert status == Status.OK and crc == crc32(bytes(board.dram[:size]))
    with pytest.raises(DeviceError, match=rf"RESIDENT_WAIT.*{addr + COMMAND_BYTES:#x}.*error 2"):
        device.run_program()


# -- overlapped runs (protocol v5) -------------------------------------------------------------
@pytest.fixture(scope="module")
def three(small):
    """Three different images and their golden logits (v1.1 at 64)."""
    network = small[0]
    xs = [network.quantize_input(preprocess(p, SIZE)) for p in bundled_photos()[:3]]
    return xs, [golden.run_network(network, x, keep=False)[network.output.name] for x in xs]


def collapse(opcodes) -> list[Opcode]:
    """``opcodes`` with each run of one opcode (a chunked transfer) as one entry."""
    return [op for i, op in enumerate(opcodes) if i == 0 or opcodes[i - 1] != op]


@pytest.mark.parametrize("run_frames", [None, 2])
def test_run_resident_many_equals_golden_and_moves_data_while_runs_go(small, three, run_frames):
    """run_frames None: each run ends at its RESIDENT_WAIT; 2: it ends on its own, before the
    WAIT (which then answers at once)."""
    _, _, images, _ = small
    xs, expected = three
    image = images["indices"]
    board = FakeResidentBoard()
    board.run_frames = run_frames
    device = fake_device(board)
    device.load_model(image)
    board.frames.clear()
    before = device.link_bytes
    results = list(device.run_resident_many(image, xs))
    assert len(results) == 3
    for (logits, stats), want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(logits, want)
        assert stats["overlapped"] is True
        assert stats["cycles"] == (
            stats["engine_cycles"] + stats["dma_wait_cycles"] + stats["other_cycles"]
        )
        assert stats["minimum_link_bytes"] < stats["link_bytes"] < 1.1 * stats["minimum_link_bytes"]
    # every frame of the stream is some image's own
    assert sum(stats["link_bytes"] for _, stats in results) == device.link_bytes - before
    # the schedule: write the next input while a run goes, wait, start, read the last logits
    W, R, S, A = Opcode.MEM_WRITE, Opcode.MEM_READ, Opcode.RUN_RESIDENT, Opcode.RESIDENT_WAIT
    assert collapse(board.frames) == [W, S, W, A, S, R, W, A, S, R, A, R]
    slots = [(image.input_address(i % 2), image.output_address(i % 2)) for i in range(3)]
    assert board.starts == slots
    if run_frames is None:
        # the device served the link while it ran: inputs and logits of other images
        assert W in board.during_run and R in board.during_run
        assert results[0][1]["host_cycles"] == image.input_bytes()  # x1 written during run 0
        assert results[2][1]["host_cycles"] == image.output_bytes()  # logits 1 during run 2
    assert board.running is None


def test_stopping_run_resident_many_early_leaves_the_device_idle(small, three):
    _, _, images, _ = small
    xs, expected = three
    image = images["huffman"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    runs = device.run_resident_many(image, xs)
    logits, _ = next(runs)
    np.testing.assert_array_equal(logits, expected[0])
    assert board.running is not None  # run 1 goes
    runs.close()
    assert board.running is None and board.frames[-1] == Opcode.RESIDENT_WAIT


def test_a_replayed_run_resident_does_not_start_a_second_run(small):
    _, x, images, expected = small
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    board.drop = [Opcode.RUN_RESIDENT]  # the device starts the run, its answer is lost
    board.frames.clear()
    logits, _ = device.run_resident(image, x)
    np.testing.assert_array_equal(logits, expected)
    assert board.frames.count(Opcode.RUN_RESIDENT) == 2 and device.retried == 1
    assert len(board.starts) == 1  # the replay (same seq) was answered OK, nothing restarted


def test_busy_while_a_run_goes_is_device_busy_and_not_retried(small):
    _, x, images, expected = small
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    device.mem_write(image.input_address(0), image.input_blob(x))
    device.start_program(image.input_address(0), image.output_address(0))
    assert device.status()["running"] == 1
    board.frames.clear()
    refused = [
        lambda: device.start_program(image.input_address(1), image.output_address(1)),
        lambda: device.mem_write(0, b"x"),  # into the model
        lambda: device.commit_model(image.commit_size, 0, image.program_address, "00" * 8),
        lambda: device.write(BufferSpace.WEIGHT, 0, b"x"),  # a streamed opcode
    ]
    for call in refused:
        with pytest.raises(DeviceBusy, match=r"busy running a resident program.*wait_program"):
            call()
    assert board.frames == [
        Opcode.RUN_RESIDENT,
        Opcode.MEM_WRITE,
        Opcode.MODEL_COMMIT,
        Opcode.WRITE,
    ]  # each refused once, never retried
    assert board.model["loaded"] and len(board.starts) == 1
    device.mem_write(image.input_address(1), image.input_blob(x))  # above the model: served
    run = device.wait_program()
    assert run["host_cycles"] == image.input_bytes() and device.status()["running"] == 0
    logits = image.decode_output(device.mem_read(image.output_address(0), image.output_bytes()))
    np.testing.assert_array_equal(logits, expected)
    assert isinstance(DeviceBusy("x"), DeviceError)


def test_run_addresses_inside_the_model_are_refused(small):
    _, _, images, _ = small
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    with pytest.raises(DeviceError, match="RUN_RESIDENT: the input or output address lies inside"):
        device.start_program(0, image.output_address(0))
    assert not board.starts


def test_a_failed_run_is_reported_by_its_wait(small, three):
    _, _, images, _ = small
    xs, _ = three
    image = images["indices"]
    board = FakeResidentBoard()
    device = fake_device(board)
    device.load_model(image)
    board.run_error = 6  # hw.soc.sequencer.SequencerError.ENGINE
    pc = image.program_address
    with pytest.raises(DeviceError, match=rf"RESIDENT_WAIT: .* {pc:#x} with sequencer error 6"):
        list(device.run_resident_many(image, xs))
    assert board.running is None and len(board.starts) == 1  # nothing started after it
    with pytest.raises(NoModel, match="RESIDENT_WAIT"):
        fake_device().wait_program()


# -- the CLI ------------------------------------------------------------------------------------
class FakeBoardServer:
    """Serves a FakeResidentBoard on ``socket://127.0.0.1:PORT`` (one connection at a time), so
    ``host.infer --device URL`` runs against it."""

    def __init__(self, board: FakeResidentBoard):
        self.board = board
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    self.board.write(data)
                    if self.board.pending:
                        conn.sendall(bytes(self.board.pending))
                        self.board.pending.clear()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def sqz_model(tmp_path):
    from fpga.spec.sqz import write_model
    from fpga.toolflow.compress import compress_network

    network, shared, _ = compress_network("v1.1", 6, size=SIZE)
    path = tmp_path / "small.sqz"
    write_model(path, network, shared, 6)
    return path


def test_infer_cli_in_resident_mode_reports_the_accounting(sqz_model, capsys):
    from host.infer import main

    server = FakeBoardServer(FakeResidentBoard())
    try:
        photos = [str(p) for p in bundled_photos()[:3]]
        argv = [*photos, "--model", str(sqz_model), "--device", server.url, "--no-progress"]
        assert main([*argv, "--json"]) == 0
        results = json.loads(capsys.readouterr().out)
        assert [r["mode"] for r in results] == ["resident"] * 3
        assert all(r["golden_match"] for r in results)
        loads = [r["model_load"] for r in results]
        assert loads[0]["loaded"] and loads[0]["link_bytes"] > loads[0]["bytes"]
        assert [load["loaded"] for load in loads[1:]] == [False, False]
        commits = server.board.frames.count(Opcode.MODEL_COMMIT)
        assert commits == 1
        for r in results:
            shares = r["engine_share"] + r["dma_wait_share"] + r["other_share"]
            assert shares == pytest.approx(1.0)
            assert r["link_ratio"] == r["link_bytes"] / r["minimum_link_bytes"]
            # a stream link (the stand-in's): predicted over the board's UART
            assert (r["link_kind"], r["link_bps"], r["device_link"]) == (
                "uart",
                12_000_000,
                "stream",
            )
            assert r["clock_hz"] == 100_000_000 and r["link_frames"] > 0
            assert r["overlapped"] and r["host_cycles"] >= 0
            assert r["predicted_images_per_s"] > r["predicted_sequential_images_per_s"] > 0
        # the three images went through one overlapped stream: runs in alternating slots,
        # inputs and logits moving while a run went
        starts = server.board.starts
        assert len(starts) == 3 and starts[0] == starts[2] != starts[1]
        assert {Opcode.MEM_WRITE, Opcode.MEM_READ} <= set(server.board.during_run)
        # a second session: the board still holds the model, nothing is written
        assert main(argv[:1] + argv[3:]) == 0
        out = capsys.readouterr().out
        assert "already on the device" in out and "engine" in out and "DMA wait" in out
        assert "images/s (link and compute overlapped) at 100 MHz over a 12 Mbaud UART" in out
        assert "images/s (compute, then transfer)" in out and "host cycles" in out
        assert "equals fpga.spec.golden: yes" in out
        assert server.board.frames.count(Opcode.MODEL_COMMIT) == 1
    finally:
        server.close()


def test_infer_cli_resident_on_a_board_without_dram_is_one_error_line(sqz_model, capsys):
    from host.infer import main

    server = FakeBoardServer(FakeResidentBoard(dram_bytes=0))
    try:
        photo = str(bundled_photos()[0])
        argv = [photo, "--model", str(sqz_model), "--device", server.url, "--mode", "resident"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--mode resident needs a board with DRAM" in err[0]
    finally:
        server.close()


def test_infer_cli_turns_a_device_refusal_into_one_error_line(sqz_model, capsys):
    from host.infer import main

    board = FakeResidentBoard()
    board.run_error = 6  # hw.soc.sequencer.SequencerError.ENGINE
    server = FakeBoardServer(board)
    try:
        photo = str(bundled_photos()[0])
        assert main([photo, "--model", str(sqz_model), "--device", server.url]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "RESIDENT_WAIT" in err[0] and "sequencer error 6" in err[0]
        # a refusal is not retried
        assert board.frames.count(Opcode.RUN_RESIDENT) == 1
        assert board.frames.count(Opcode.RESIDENT_WAIT) == 1
    finally:
        server.close()


def test_the_error_classes_are_user_errors():
    for cls in (DeviceError, NoModel, BadModel, NoDram, LinkError):
        assert issubclass(cls, UserError)
    assert run_cli(lambda: (_ for _ in ()).throw(NoModel("no model"))) == 2

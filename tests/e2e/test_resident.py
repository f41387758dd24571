"""Resident mode end to end: the host (host.driver) against the simulated board with its DRAM
(the SoC's RTL with sequencer, DMA and the LiteDRAM controller under Verilator, fixture
``resident_board``).

The model is written into DRAM once and committed (the device checks its CRC-32), then each
image costs one input write, RUN_RESIDENT and one output read. Reduced input sizes as
tests/e2e/test_e2e.py; the logits must equal fpga.spec.golden bit for bit.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from fpga.compiler.program import compile_network
from fpga.compiler.resident import compile_resident
from fpga.compiler.traffic import device_cycles
from fpga.spec import golden
from fpga.spec.commands import COMMAND_BYTES, SLOTS, command, pack_commands
from fpga.spec.commands import Opcode as Cmd
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import FRAME_HEADER, MEM_WRITE_REQUEST, SYNC, Opcode, Status, crc32
from fpga.toolflow import quant
from host.driver import Device, DeviceError, NoModel
from host.transport import open_transport
from tests.test_resident_host import CorruptOneFrame, sent_opcode

SIZES = {"v1.0": 67, "v1.1": 64}
DRAM_BYTES = 256 << 20  # the simulated board's DDR3 (the Arty A7's)


class FrameLog:
    """A transport wrapper that records (opcode, MEM_WRITE address or None) per frame sent."""

    def __init__(self, transport):
        self.transport = transport
        self.sent: list[tuple[int, int | None]] = []

    def write(self, data: bytes) -> None:
        opcode = sent_opcode(data)
        if opcode is not None:
            addr = None
            if opcode == Opcode.MEM_WRITE:
                body = data[len(SYNC) + FRAME_HEADER.size :]
                addr = MEM_WRITE_REQUEST.unpack(body)["addr"]
            self.sent.append((opcode, addr))
        self.transport.write(data)

    def read(self, size: int, timeout: float) -> bytes:
        return self.transport.read(size, timeout)

    def close(self) -> None:
        self.transport.close()

    def count(self, opcode: Opcode) -> int:
        return sum(1 for op, _ in self.sent if op == opcode)


_NETWORKS: dict = {}


def network_and_image(variant: str, photo: int = 0):
    if variant not in _NETWORKS:
        _NETWORKS[variant] = quant.quantize_network(variant, size=SIZES[variant])
    network = _NETWORKS[variant]
    x = network.quantize_input(preprocess(bundled_photos()[photo], SIZES[variant]))
    return network, x


def resident_image(device: Device, network, weights_mode: str = "indices", split: bool = True):
    """The network compiled for the board's config, double-buffered (``split``) as the host
    compiles it."""
    info = device.info
    program = compile_network(network, info.config(), weights_mode=weights_mode, split=split)
    return compile_resident(program, dram_size=info.dram_bytes, input_size=network.input_size)


def open_device(board, wrap=None) -> Device:
    transport = open_transport(board.url)
    device = Device(wrap(transport) if wrap else transport, clock=board.clock)
    info = device.identify()
    assert info.dram_bytes == DRAM_BYTES
    return device


def expected_logits(network, x):
    return golden.run_network(network, x, keep=False)[network.output.name]


@pytest.mark.parametrize(
    "variant,weights_mode,split",
    [
        ("v1.0", "indices", True),
        ("v1.0", "huffman", True),
        ("v1.1", "indices", True),
        ("v1.1", "huffman", True),
        ("v1.1", "indices", False),
    ],
    ids=["v1.0-indices", "v1.0-huffman", "v1.1-indices", "v1.1-huffman", "v1.1-sequential"],
)
def test_resident_network_is_bit_exact(resident_board, variant, weights_mode, split):
    """Whole networks (reduced input sizes) double-buffered as the host compiles them, and one
    without double buffering: bit-exact, the counters adding up, the device's cycles as the cost
    model's timeline predicts them (fpga.compiler.traffic.device_cycles)."""
    device = open_device(resident_board)
    try:
        network, x = network_and_image(variant)
        image = resident_image(device, network, weights_mode, split)
        assert device.load_model(image).loaded
        logits, stats = device.run_resident(image, x)
        status = device.status()
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))
    engine = sum(image.program.predicted_cycles().values())
    runs = image.program.runs
    # RUN commands wait for the engine: its exact cycles, plus the start/done handshake
    assert engine <= stats["engine_cycles"] <= engine + 8 * runs, (stats, engine, runs)
    assert stats["dma_wait_cycles"] > 0 and stats["other_cycles"] > 0
    assert stats["cycles"] == (
        stats["engine_cycles"] + stats["dma_wait_cycles"] + stats["other_cycles"]
    )
    # the cost model's timeline predicts the run within 1 % (it leaves out the DRAM's refresh,
    # banks and turnarounds; the cycles spent on the link's transfers are taken out)
    model = device_cycles(image)["total"]
    ran = stats["cycles"] - stats["host_cycles"]
    assert abs(ran - model) < 0.01 * model, (ran, model)
    assert stats["minimum_link_bytes"] == image.input_bytes() + image.output_bytes()
    assert stats["minimum_link_bytes"] < stats["link_bytes"] < 1.05 * stats["minimum_link_bytes"]
    assert status["model_loaded"] == 1 and status["model_fingerprint"] == image.fingerprint()
    assert status["model_bytes"] == image.commit_size
    assert status["crc_errors"] == 0 and status["engine_errors"] == 0
    assert status["sequencer_error"] == 0


FULL_SIZES = {"v1.0": 227, "v1.1": 224}


@pytest.mark.slow
@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_resident_full_size_network_is_bit_exact(resident_board, variant, weights_mode):
    """The networks at their real input sizes (minutes each on the simulator)."""
    size = FULL_SIZES[variant]
    network = quant.quantize_network(variant, size=size)
    x = network.quantize_input(preprocess(bundled_photos()[0], size))
    device = open_device(resident_board)
    try:
        image = resident_image(device, network, weights_mode)
        assert device.load_model(image).loaded
        logits, stats = device.run_resident(image, x)
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))
    assert stats["minimum_link_bytes"] < stats["link_bytes"] < 1.05 * stats["minimum_link_bytes"]


def test_three_images_back_to_back_with_one_model_load(resident_board):
    network, _ = network_and_image("v1.1")
    log = None

    def wrap(transport):
        nonlocal log
        log = FrameLog(transport)
        return log

    device = open_device(resident_board, wrap)
    try:
        image = resident_image(device, network, "huffman")
        load = device.load_model(image)
        assert load.loaded and load.link_bytes > image.load_size
        assert log.count(Opcode.MODEL_COMMIT) == 1
        per_image = []
        inputs = [network_and_image("v1.1", photo)[1] for photo in range(3)]
        sent_before = len(log.sent)
        # overlapped: image i+1's input and image i-1's logits cross the link while run i goes
        results = list(device.run_resident_many(image, inputs))
        for photo, (x, (logits, stats)) in enumerate(zip(inputs, results, strict=True)):
            np.testing.assert_array_equal(logits, expected_logits(network, x), err_msg=str(photo))
            assert stats["overlapped"] and stats["link_bytes"] < 1.05 * stats["minimum_link_bytes"]
            per_image.append(stats["link_bytes"])
        sent = log.sent[sent_before:]
        # no reload: only the input slots are written, no commit
        assert Opcode.MODEL_COMMIT not in [op for op, _ in sent]
        slots = {image.input_address(k) for k in range(SLOTS)}
        written = {addr for op, addr in sent if op == Opcode.MEM_WRITE}
        assert all(addr >= image.commit_size for addr in written)
        assert all(any(0 <= a - s < image.input_slot_bytes for s in slots) for a in written)
        # the device served the link's transfers while the first two runs computed
        assert all(stats["host_cycles"] > 0 for _, stats in results[:2]), results
        assert len(set(per_image)) == 1  # the same frames per image
        assert not device.load_model(image).loaded  # still held: the load is skipped
        assert log.count(Opcode.MODEL_COMMIT) == 1
        # a new session (a fresh Device, knowing nothing; the simulated board serves one
        # connection, so it reuses the transport) finds the model on the board too
        again = Device(log, clock=resident_board.clock)
        again.identify()
        assert not again.load_model(image).loaded
        logits, _ = again.run_resident(image, x)
        assert log.count(Opcode.MODEL_COMMIT) == 1
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))


def test_a_second_model_replaces_the_first(resident_board):
    device = open_device(resident_board)
    try:
        first, x1 = network_and_image("v1.1")
        second, x2 = network_and_image("v1.0")
        image1 = resident_image(device, first)
        image2 = resident_image(device, second, "huffman")
        assert device.load_model(image1).loaded
        np.testing.assert_array_equal(
            device.run_resident(image1, x1)[0], expected_logits(first, x1)
        )
        assert device.load_model(image2).loaded
        assert device.status()["model_fingerprint"] == image2.fingerprint()
        logits, _ = device.run_resident(image2, x2)
        np.testing.assert_array_equal(logits, expected_logits(second, x2))
        assert device.load_model(image1).loaded  # the first is gone: written again
    finally:
        device.close()


def test_a_run_without_a_model_is_a_clear_error(resident_board):
    network, x = network_and_image("v1.1")
    device = open_device(resident_board)
    try:
        image = resident_image(device, network)
        assert device.status()["model_loaded"] == 0
        start = time.monotonic()
        with pytest.raises(NoModel, match="holds no model"):
            device.run_resident(image, x)
        assert time.monotonic() - start < 10
        assert device.retried == 0  # a definite answer, not retried
    finally:
        device.close()


def test_a_corrupted_load_frame_is_retried_and_the_model_runs(resident_board):
    network, x = network_and_image("v1.1")
    wrapper = None

    def wrap(transport):
        nonlocal wrapper
        wrapper = CorruptOneFrame(transport, Opcode.MEM_WRITE, nth=7)
        return wrapper

    device = open_device(resident_board, wrap)
    try:
        image = resident_image(device, network)
        assert device.load_model(image).loaded
        assert wrapper.flipped == 1 and device.retried >= 1
        status = device.status()
        assert status["crc_errors"] >= 1 and status["model_loaded"] == 1
        logits, _ = device.run_resident(image, x)
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))


def test_an_interrupted_load_leaves_no_runnable_model(resident_board):
    network, x = network_and_image("v1.1")
    device = open_device(resident_board)
    try:
        image = resident_image(device, network)
        blob = image.load_bytes()
        # on a fresh board: part of the model written, no MODEL_COMMIT
        device.mem_write(0, blob[: image.commit_size // 2])
        with pytest.raises(NoModel):
            device.run_resident(image, x)
        # a committed model, then a new load that stops half way: the old one is forgotten
        assert device.load_model(image).loaded
        device.mem_write(0, blob[: image.commit_size // 2])
        assert device.status()["model_loaded"] == 0
        with pytest.raises(NoModel):
            device.run_resident(image, x)
        # a commit whose CRC does not match what DRAM holds is refused, with the device's CRC
        device.mem_write(0, blob)
        wrong = crc32(blob[: image.commit_size]) ^ 1
        status, device_crc = device.commit_model(
            image.commit_size, wrong, image.program_address, image.fingerprint()
        )
        assert status == Status.BAD_MODEL and device_crc == wrong ^ 1
        with pytest.raises(NoModel):
            device.run_resident(image, x)
        # the full load again recovers
        assert device.load_model(image).loaded
        logits, _ = device.run_resident(image, x)
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))


def _refused_program(device: Device, head: bytes, program: bytes) -> str:
    """Commit ``head`` then ``program`` (the program at ``len(head)``) as a model, run it and
    return the device's error: it must come within 10 s (a refusal, never a hang)."""
    device.mem_write(0, head + program)
    status, _ = device.commit_model(
        len(head) + len(program), crc32(head + program), len(head), "00" * 8
    )
    assert status == Status.OK
    start = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        device.run_program()
    assert time.monotonic() - start < 10
    return str(caught.value)


def test_a_program_outside_the_dram_is_a_device_error_not_a_hang(resident_board):
    from hw.soc.sequencer import SequencerError

    device = open_device(resident_board)
    try:
        program = pack_commands(
            [
                command(Cmd.LOAD, BufferSpace.WEIGHT, length=16, dram_addr=0),
                command(Cmd.LOAD, BufferSpace.WEIGHT, length=16, dram_addr=DRAM_BYTES - 8),
                command(Cmd.END),
            ]
        )
        addr = 4096
        message = _refused_program(device, bytes(addr), program)
        bad = addr + COMMAND_BYTES
        assert f"{bad:#x}" in message and f"error {SequencerError.DRAM_RANGE.value}" in message
        after = device.status()
        assert after["sequencer_error"] == SequencerError.DRAM_RANGE.value
        assert after["sequencer_pc"] == bad
        # the board is not wedged: a real model loads and runs
        network, x = network_and_image("v1.1")
        image = resident_image(device, network)
        assert device.load_model(image).loaded
        logits, _ = device.run_resident(image, x)
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))


def test_a_load_into_a_running_half_is_an_engine_error_not_a_hang(resident_board):
    """Double buffering on the device: a SPLIT RUN's tile computes while a LOAD writes into the
    ACT_IN half it reads (no WAIT between: the checker refuses such a program, so it is put in
    DRAM by hand): the engine drops the write and flags its error, the program ends with the
    sequencer's ENGINE code at that LOAD (an error answer, never a hang), and the board then
    runs a real model bit-exact."""
    from fpga.spec.commands import Flag
    from fpga.spec.layout import LayerDescriptor, Op
    from hw.soc.sequencer import SequencerError

    device = open_device(resident_board)
    try:
        # a MAXPOOL tile over the lower half of ACT_IN (a long run: 64 x 64 pixels, 8 lanes)
        descriptor = LayerDescriptor(
            Op.MAXPOOL, kernel=3, stride=2, in_groups=1, in_h=32, in_w=64, out_h=15, out_w=31
        ).pack()
        program = pack_commands(
            [
                command(Cmd.LOAD, BufferSpace.DESCRIPTOR, length=len(descriptor), dram_addr=0),
                command(Cmd.RUN, flags=int(Flag.SPLIT)),
                command(Cmd.LOAD, BufferSpace.ACT_IN, length=64, dram_addr=0, buffer_offset=128),
                command(Cmd.END),
            ]
        )
        addr = 4096
        message = _refused_program(device, descriptor + bytes(addr - len(descriptor)), program)
        bad = addr + 2 * COMMAND_BYTES
        assert f"{bad:#x}" in message and f"error {SequencerError.ENGINE.value}" in message
        after = device.status()
        assert after["sequencer_error"] == SequencerError.ENGINE.value
        network, x = network_and_image("v1.1")
        image = resident_image(device, network)
        assert device.load_model(image).loaded
        logits, _ = device.run_resident(image, x)
    finally:
        device.close()
    np.testing.assert_array_equal(logits, expected_logits(network, x))


def test_infer_cli_runs_resident_by_default_on_a_board_with_dram(resident_board, tmp_path, capsys):
    import json

    from fpga.spec.sqz import write_model
    from fpga.toolflow.compress import compress_network
    from host.infer import main

    model = tmp_path / "small.sqz"
    network, shared, _ = compress_network("v1.1", 6, size=SIZES["v1.1"])
    write_model(model, network, shared, 6)
    photos = [str(p) for p in bundled_photos()[:2]]
    argv = [*photos, "--model", str(model), "--device", resident_board.url, "--json"]
    assert main([*argv, "--weights-mode", "huffman", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == photos
    assert all(r["mode"] == "resident" and r["golden_match"] for r in results)
    assert [r["model_load"]["loaded"] for r in results] == [True, False]
    for r in results:
        assert r["cycles"] == r["engine_cycles"] + r["dma_wait_cycles"] + r["other_cycles"]
        assert 1 < r["link_ratio"] < 1.05
        assert r["clock_hz"] == 100_000_000 and r["predicted_images_per_s"] > 0


def test_streamed_mode_still_runs_on_the_board_with_dram(resident_board):
    """--mode streamed on a board with DRAM: the host walks the tiles as before."""
    from host.classify import classify_on_device

    network, _ = network_and_image("v1.1")
    device = open_device(resident_board)
    try:
        photo = bundled_photos()[1]
        (result,) = classify_on_device(device, network, None, [photo], False, mode="streamed")
        assert device.status()["model_loaded"] == 0  # nothing went to DRAM
    finally:
        device.close()
    assert result["mode"] == "streamed" and result["golden_match"]
    assert result["link_bytes"] >= result["minimum_link_bytes"]  # every tile crossed the link

"""Link robustness: corruption between host and simulated board, dead devices, bad URLs."""

import os
import random
import socket
import threading
import time

import pytest

from fpga.spec.config import DEFAULT_CONFIG, SMALL_CONFIG
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    IDENTIFY_RESPONSE,
    MAGIC,
    PROTOCOL_VERSION,
    Opcode,
    Status,
    decode_frame,
    encode_frame,
    identify_fields,
    identify_payload,
)
from host.driver import Device, DeviceMismatch, LinkError
from host.transport import TransportError, open_transport


class CorruptingProxy:
    """TCP proxy that flips, drops and inserts bytes and adds garbage, both directions."""

    def __init__(self, target_port: int, rate: float, seed: int):
        self.rate = rate
        self.rng = random.Random(seed)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.target_port = target_port
        self.events = 0
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _mangle(self, data: bytes) -> bytes:
        if self.rng.random() >= self.rate:
            return data
        self.events += 1
        data = bytearray(data)
        kind = self.rng.choice(["flip", "drop", "insert", "garbage"])
        i = self.rng.randrange(len(data))
        if kind == "flip":
            data[i] ^= 1 << self.rng.randrange(8)
        elif kind == "drop":
            del data[i]
        elif kind == "insert":
            data.insert(i, self.rng.randrange(256))
        else:
            data = bytearray(self.rng.randbytes(self.rng.randrange(1, 40))) + data
        return bytes(data)

    def _pump(self, src, dst):
        try:
            while not self.stop:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(self._mangle(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self):
        client, _ = self.server.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()


def read_act_in(device, offset, length):
    """ACT_IN is write-only from the host: copy it to ACT_OUT with an ADD, (a*1 + b*0) >> 0,
    then read the region back from ACT_OUT."""
    from fpga.spec.layout import LayerDescriptor, Op

    words = (offset + length + 7) // 8  # copy from word 0 up to the end of the region
    desc = LayerDescriptor(
        op=Op.ADD,
        relu=False,
        in_groups=1,
        in_h=1,
        in_w=words,
        out_h=1,
        out_w=words,
        out_groups=1,
        b_base=0,
        mult_a=1,
        mult_b=0,
        add_shift=0,
    )
    device.write(BufferSpace.DESCRIPTOR, 0, desc.pack())
    device.run(words)
    return device.read(BufferSpace.ACT_OUT, offset, length)


def test_link_fuzz_never_silently_wrong(board):
    """>= 10,000 frames through a corrupting link: every command ends correct after retries
    (or with a clear error), nothing hangs, and every read-back equals what was written."""
    seed = int(os.environ.get("LINK_FUZZ_SEED", random.randrange(2**32)))
    print(f"LINK_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    port = int(board.url.rsplit(":", 1)[1])
    proxy = CorruptingProxy(port, rate=0.04, seed=seed)
    device = Device(open_transport(f"socket://127.0.0.1:{proxy.port}"), timeout=0.15, retries=40)
    shadow = bytearray(4096)
    failures = 0
    start = time.monotonic()
    try:
        device.identify()
        frames = 0
        while frames < 10_000:
            offset = rng.randrange(0, 4096 - 64)
            data = rng.randbytes(rng.randrange(1, 64))
            try:
                device.write(BufferSpace.ACT_IN, offset, data)
                shadow[offset : offset + len(data)] = data
            except LinkError:
                failures += 1  # a clear error is allowed; the shadow is then unknown there
                shadow[offset : offset + len(data)] = bytes(len(data))
                device.write(BufferSpace.ACT_IN, offset, bytes(len(data)))
            frames += 1
            if frames % 10 == 0:  # read back through the same corrupting link
                lo = rng.randrange(0, 4096 - 512)
                length = rng.randrange(1, 512)
                got = device.read(BufferSpace.ACT_OUT, 0, 1)  # exercises READ framing
                assert len(got) == 1
                frames += 1
                back = read_act_in(device, lo, length)
                assert back == bytes(shadow[lo : lo + length]), f"silently wrong at {lo}"
                frames += 3
        assert proxy.events > 100, "the proxy did not corrupt enough to test anything"
    finally:
        proxy.stop = True
        device.close()
    total_frames = frames + device.retried
    print(
        f"{frames} commands, {device.retried} retries, {proxy.events} corruptions, "
        f"{failures} clear errors, {time.monotonic() - start:.1f} s"
    )
    assert total_frames >= 10_000
    assert failures == 0


def test_identify_reports_the_configuration(board):
    device = board.open_device()
    try:
        info = device.identify(expected=DEFAULT_CONFIG)
        assert info.config() == DEFAULT_CONFIG.replace()
        assert info.rows == DEFAULT_CONFIG.rows and info.max_payload == DEFAULT_CONFIG.max_payload
    finally:
        device.close()


def test_device_disappearing_mid_run_is_a_clear_error(board):
    device = Device(open_transport(board.url), timeout=0.5, retries=2)
    device.identify()
    board.kill()
    start = time.monotonic()
    with pytest.raises((LinkError, TransportError)):
        for _ in range(100):
            device.write(BufferSpace.ACT_IN, 0, bytes(512))
    assert time.monotonic() - start < 10  # no hang


class FakeTransport:
    """Answers IDENTIFY with a given payload (an old/foreign bitstream)."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.pending = b""

    def write(self, frame: bytes) -> None:
        seq = decode_frame(frame).seq
        self.pending += encode_frame(seq, Opcode.IDENTIFY | 0x80, bytes([Status.OK]) + self.payload)

    def read(self, size: int, timeout: float) -> bytes:
        out, self.pending = self.pending[:size], self.pending[size:]
        return out

    def close(self) -> None:
        pass


def test_a_response_that_arrived_is_taken_after_the_deadline():
    """A host kept off the CPU past its deadline (a busy machine) still takes the response the
    device sent meanwhile: no retry. A device that sent nothing still times out."""
    ticks = iter(range(0, 10_000, 10))  # every look at the clock is 10 s later

    def late_clock() -> float:
        return float(next(ticks))

    device = Device(FakeTransport(identify_payload(DEFAULT_CONFIG)), timeout=2.0, clock=late_clock)
    assert device.identify().rows == DEFAULT_CONFIG.rows
    assert device.retried == 0

    class Silent(FakeTransport):
        def write(self, frame: bytes) -> None:
            pass

    silent = Device(Silent(b""), timeout=2.0, retries=1, clock=late_clock)
    with pytest.raises(LinkError, match="IDENTIFY failed after 2 attempts"):
        silent.identify()


def test_wrong_bitstream_version_is_refused():
    payload = bytearray(identify_payload(DEFAULT_CONFIG))
    payload[4] = 99  # protocol version
    with pytest.raises(DeviceMismatch, match="protocol v99"):
        Device(FakeTransport(bytes(payload))).identify()
    foreign = b"XXXX" + bytes(IDENTIFY_RESPONSE.size - 4)
    with pytest.raises(DeviceMismatch, match="not a SqueezeFPGA"):
        Device(FakeTransport(foreign)).identify()
    assert MAGIC == b"SQZF"
    v1 = MAGIC + bytes([1]) + bytes(29)  # protocol v1's shorter IDENTIFY
    with pytest.raises(DeviceMismatch, match=f"protocol v1, this host v{PROTOCOL_VERSION}"):
        Device(FakeTransport(v1)).identify()


def test_mismatched_configuration_is_refused():
    payload = identify_payload(DEFAULT_CONFIG.replace(rows=4, cols=4))
    with pytest.raises(DeviceMismatch, match="differs"):
        Device(FakeTransport(payload)).identify(expected=DEFAULT_CONFIG)
    # the clock is part of the configuration now that IDENTIFY reports it
    payload = identify_payload(DEFAULT_CONFIG.replace(clock_mhz=50.0))
    with pytest.raises(DeviceMismatch, match="differs"):
        Device(FakeTransport(payload)).identify(expected=DEFAULT_CONFIG)
    info = Device(FakeTransport(payload)).identify(expected=DEFAULT_CONFIG.replace(clock_mhz=50.0))
    assert info.config() == DEFAULT_CONFIG.replace(clock_mhz=50.0)


def test_identify_rebuilds_the_full_configuration():
    """Every AcceleratorConfig field a build can change comes back from IDENTIFY."""
    config = SMALL_CONFIG.replace(index_bits_max=6, clock_mhz=12.0, max_payload=512)
    info = Device(FakeTransport(identify_payload(config, baud=3_000_000))).identify()
    assert info.config() == config and info.config().fingerprint() == info.fingerprint
    assert (info.clock_hz, info.baud, info.index_bits_max) == (12_000_000, 3_000_000, 6)


def test_a_fingerprint_that_does_not_match_its_configuration_is_refused():
    fields = identify_fields(DEFAULT_CONFIG)
    fields["fingerprint"] = bytes.fromhex(DEFAULT_CONFIG.replace(rows=4, cols=4).fingerprint())
    with pytest.raises(DeviceMismatch, match="does not match its own configuration"):
        Device(FakeTransport(IDENTIFY_RESPONSE.pack(**fields))).identify()


class FakeUart(FakeTransport):
    """A FakeTransport opened at a baud rate, as a serial port would be."""

    def __init__(self, payload: bytes, baudrate: int):
        super().__init__(payload)
        self.baudrate = baudrate


def test_a_baud_mismatch_names_both_rates_and_the_fix():
    payload = identify_payload(DEFAULT_CONFIG, baud=3_000_000)
    with pytest.raises(DeviceMismatch, match=r"3,000,000 baud.*12,000,000 baud.*--board NAME"):
        Device(FakeUart(payload, 12_000_000)).identify()
    assert Device(FakeUart(payload, 3_000_000)).identify().baud == 3_000_000
    assert Device(FakeTransport(payload)).identify().baud == 3_000_000  # a socket: no rate
    unknown = identify_payload(DEFAULT_CONFIG, baud=0)  # a stream link: nothing to compare
    assert Device(FakeUart(unknown, 12_000_000)).identify().baud == 0


def test_a_serial_port_opens_at_the_baud_asked_for():
    """open_transport has no default baud: the port's rate is exactly what was asked."""
    for baud in (3_000_000, 12_000_000):
        transport = open_transport("loop://", baud)
        try:
            assert transport.port.baudrate == baud and transport.baudrate == baud
        finally:
            transport.close()
        device = Device.open("loop://", baud=baud)
        assert device.baud == baud
        device.close()
    with pytest.raises(TransportError, match="--board NAME or --baud N"):
        open_transport("loop://")


@pytest.fixture(scope="module")
def uart_standin_binary():
    """A simulated board whose IDENTIFY says it was built for a 3 Mbaud UART (the small
    config: a second Verilator build, cached like the first)."""
    from sim import runner

    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from sim.board import build

    return build(SMALL_CONFIG, baud=3_000_000)


@pytest.fixture
def uart_standin_board(uart_standin_binary):
    from host.simulated import BoardProcess

    with BoardProcess(uart_standin_binary) as board:
        yield board


def test_simulated_board_refuses_a_port_opened_at_another_baud(uart_standin_board):
    device = Device.open(uart_standin_board.url, baud=12_000_000)
    try:
        with pytest.raises(DeviceMismatch) as caught:
            device.identify()
    finally:
        device.close()
    message = str(caught.value)
    assert "3,000,000" in message and "12,000,000" in message and "--baud 3000000" in message


def test_simulated_board_at_the_same_baud_is_accepted(uart_standin_board):
    device = Device.open(uart_standin_board.url, baud=3_000_000)
    try:
        info = device.identify(expected=SMALL_CONFIG)
    finally:
        device.close()
    assert info.baud == 3_000_000 and info.config() == SMALL_CONFIG


@pytest.mark.parametrize(
    "url,message",
    [
        ("foo://bar", "unknown device URL"),
        ("/dev/ttyUSB97", "no device at"),
        ("pcie:///dev/xdma9", "not found"),
    ],
)
def test_bad_device_urls(url, message):
    with pytest.raises(TransportError, match=message):
        open_transport(url)


def test_no_answer_is_a_clear_error_not_a_hang():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    device = Device(open_transport(f"socket://127.0.0.1:{port}"), timeout=0.2, retries=2)
    with pytest.raises(LinkError, match="failed after 3 attempts"):
        device.identify()
    server.close()


def test_huffman_weight_streams_survive_a_corrupting_link(board):
    """On-chip Huffman decode is the one stateful write: a whole network in that mode through a
    corrupting link (retries replay frames) still equals fpga.spec.golden bit for bit."""
    import numpy as np

    from fpga.compiler.program import compile_network, execute
    from fpga.spec import golden
    from fpga.toolflow import quant

    seed = int(os.environ.get("LINK_FUZZ_SEED", random.randrange(2**32)))
    print(f"LINK_FUZZ_SEED={seed}")
    port = int(board.url.rsplit(":", 1)[1])
    proxy = CorruptingProxy(port, rate=0.03, seed=seed)
    device = Device(open_transport(f"socket://127.0.0.1:{proxy.port}"), timeout=0.15, retries=40)
    try:
        network = quant.quantize_network("v1.1", size=35)
        image = network.quantize_input(preprocess(bundled_photos()[0], 35))
        program = compile_network(network, device.identify().config(), weights_mode="huffman")
        tensors, _ = execute(program, device, image)
        status = device.status()
    finally:
        proxy.stop = True
        device.close()
    expected = golden.run_network(network, image, keep=False)[network.output.name]
    np.testing.assert_array_equal(tensors[program.output], expected)
    assert proxy.events > 20 and device.retried > 0, "the link was not corrupted enough"
    assert status["engine_errors"] == 0

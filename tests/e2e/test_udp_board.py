"""The host over the simulated board's Ethernet: its LiteEth core under Verilator, the harness
playing the MII PHY and the network on 127.0.0.1 (``host.infer --device sim --link ethernet``).

Skipped without Verilator, or a ``sim.board.build`` without ``ethernet``. The host's own logic over
a lossy link (5 % too, garbage, another host) is proven without a simulator in
tests/test_udp_link.py.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from fpga.spec.image import bundled_photos
from fpga.spec.protocol import LinkKind
from host.simulated import BoardProcess
from sim import runner
from tests.netem import LossyProxy

SIZE = 64  # v1.1 at a reduced input size, as the other resident e2e tests


@pytest.fixture(scope="session")
def ethernet_board_binary():
    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from sim.board import build

    if "ethernet" not in inspect.signature(build).parameters:
        pytest.skip(
            "sim.board.build has no `ethernet` parameter yet: the simulated board's Ethernet "
            "harness (issue 33) has not landed"
        )
    return build(memory=True, ethernet=True)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from fpga.spec.sqz import write_model
    from fpga.toolflow.compress import compress_network

    network, shared, _ = compress_network("v1.1", 6, size=SIZE)
    path = tmp_path_factory.mktemp("udp_board") / "small.sqz"
    write_model(path, network, shared, 6)
    return path


def test_the_cli_classifies_over_the_simulated_ethernet(ethernet_board_binary, small_model, capsys):
    """``--device sim --link ethernet``: bit-exact, predicted over the board's 100 Mbit/s."""
    from host.infer import main

    photos = [str(p) for p in bundled_photos()[:2]]
    argv = [*photos, "--model", str(small_model), "--device", "sim", "--link", "ethernet"]
    assert main([*argv, "--json", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert all(r["mode"] == "resident" and r["golden_match"] for r in results)
    for r in results:
        assert (r["link_kind"], r["device_link"], r["link_bps"]) == (
            "ethernet",
            "ethernet",
            100_000_000,
        )
        assert r["predicted_images_per_s"] > 0


def test_a_lossy_network_keeps_every_image_bit_exact(ethernet_board_binary):
    """1 % of the datagrams each way dropped, duplicated, reordered and delayed, between the host
    and the simulated board: the model loads and both images equal golden."""
    from fpga.compiler.program import compile_network
    from fpga.compiler.resident import compile_resident
    from fpga.spec import golden
    from fpga.spec.image import preprocess
    from fpga.toolflow import quant
    from host.driver import Device
    from host.transport import open_transport

    network = quant.quantize_network("v1.1", size=SIZE)
    xs = [network.quantize_input(preprocess(p, SIZE)) for p in bundled_photos()[:2]]
    with BoardProcess(ethernet_board_binary, "ethernet") as board:
        port = int(board.url.rsplit(":", 1)[1])
        fates = {"loss": 0.01, "duplicate": 0.01, "reorder": 0.01, "delay": 0.01}
        with LossyProxy(("127.0.0.1", port), seed=33, **fates) as proxy:
            device = Device(open_transport(proxy.url), clock=board.clock)
            info = device.identify()
            assert info.link_kind == LinkKind.ETHERNET
            program = compile_network(network, info.config(), split=True)
            image = compile_resident(program, dram_size=info.dram_bytes, input_size=SIZE)
            for _ in range(4):  # the model's load again and again: windowed writes, ~2,600
                assert device.load_model(image, force=True).loaded  # datagrams each
            done = list(device.run_resident_many(image, xs))
            device.close()
    for (logits, _), x in zip(done, xs, strict=True):
        want = golden.run_network(network, x, keep=False)[network.output.name]
        np.testing.assert_array_equal(logits, want)
    print(f"proxy: {proxy.counts}; {device.retried} resent")


def _small_image(info, network):
    from fpga.compiler.program import compile_network
    from fpga.compiler.resident import compile_resident

    program = compile_network(network, info.config(), split=True)
    return compile_resident(program, dram_size=info.dram_bytes, input_size=SIZE)


def _ask(
    sock, address, seq: int, opcode: int, payload: bytes = b"", timeout: float = 20.0, tries=1
):
    """A raw request frame to the board (sent up to ``tries`` times, ``timeout`` s apart, as a
    host resends); its answer's frame, or None when none comes."""
    from fpga.spec.protocol import decode_frame, encode_frame

    for _ in range(tries):
        sock.sendto(encode_frame(seq, opcode, payload), address)
        sock.settimeout(timeout)
        try:
            while True:
                frame = decode_frame(sock.recvfrom(2048)[0])
                if frame.seq == seq:
                    return frame
        except TimeoutError:
            continue
    return None


def test_a_replayed_run_request_never_starts_a_second_run(ethernet_board_binary):
    """The gateware's rule behind "no run twice": RUN_RESIDENT with the seq of the run the board
    last started is answered OK and starts nothing (STATUS: not running), another seq starts a
    run (running), and IDENTIFY forgets the last run's seq."""
    import socket

    from fpga.spec.image import preprocess
    from fpga.spec.protocol import RESIDENT_RUN_REQUEST, Opcode, Status, parse_status
    from fpga.toolflow import quant

    network = quant.quantize_network("v1.1", size=SIZE)
    x = network.quantize_input(preprocess(bundled_photos()[0], SIZE))
    with BoardProcess(ethernet_board_binary, "ethernet") as board:
        device = board.open_device()
        image = _small_image(device.identify(), network)
        device.load_model(image)
        device.run_resident(image, x)
        seq = device.last_run_seq
        device.close()
        payload = RESIDENT_RUN_REQUEST.pack(
            input_addr=image.input_address(0), output_addr=image.output_address(0)
        )
        address = ("127.0.0.1", int(board.url.rsplit(":", 1)[1]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            for _ in range(2):  # the same request again, twice: answered, nothing runs
                assert (
                    _ask(sock, address, seq, Opcode.RUN_RESIDENT, payload).payload[0] == Status.OK
                )
                status = parse_status(_ask(sock, address, 200, Opcode.STATUS).payload[1:])
                assert status["running"] == 0
            other = (seq + 7) % 256
            assert _ask(sock, address, other, Opcode.RUN_RESIDENT, payload).payload[0] == Status.OK
            assert parse_status(_ask(sock, address, 201, Opcode.STATUS).payload[1:])["running"]
            assert _ask(sock, address, 202, Opcode.RESIDENT_WAIT, timeout=120).payload[0] == 0
            # after IDENTIFY (a new session) the last run's seq starts a run again
            assert _ask(sock, address, 203, Opcode.IDENTIFY) is not None
            assert _ask(sock, address, other, Opcode.RUN_RESIDENT, payload).payload[0] == Status.OK
            assert parse_status(_ask(sock, address, 204, Opcode.STATUS).payload[1:])["running"]
            assert _ask(sock, address, 205, Opcode.RESIDENT_WAIT, timeout=120).payload[0] == 0


def test_garbage_and_strangers_leave_the_board_serving_its_host(ethernet_board_binary):
    """Random datagrams of every length, frames cut short or with a bad CRC, a flood for two
    seconds from the host's address, valid requests from another address (127.0.0.2: another
    host on the simulated network, answered nothing): the board then classifies bit-exact."""
    import random
    import socket
    import time

    from fpga.spec import golden
    from fpga.spec.image import preprocess
    from fpga.spec.protocol import Opcode, encode_frame
    from fpga.toolflow import quant

    network = quant.quantize_network("v1.1", size=SIZE)
    x = network.quantize_input(preprocess(bundled_photos()[1], SIZE))
    rng = random.Random(7)
    with BoardProcess(ethernet_board_binary, "ethernet") as board:
        device = board.open_device()
        image = _small_image(device.identify(), network)  # the host: 127.0.0.1
        address = ("127.0.0.1", int(board.url.rsplit(":", 1)[1]))
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as noise,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
        ):
            noise.bind(("127.0.0.1", 0))
            stranger.bind(("127.0.0.2", 0))
            good = encode_frame(9, Opcode.STATUS)
            junk = [rng.randbytes(rng.choice([1, 2, 7, 64, 500, 1024, 1472])) for _ in range(60)]
            junk += [good[:n] for n in range(1, len(good))]  # cut short
            junk += [good[:-1] + bytes([good[-1] ^ 1])]  # a bad CRC
            for datagram in junk:
                noise.sendto(datagram, address)
            assert _ask(stranger, address, 10, Opcode.STATUS, timeout=3) is None
            end = time.monotonic() + 2  # a flood
            while time.monotonic() < end:
                noise.sendto(rng.randbytes(rng.randrange(1, 1473)), address)
            # the flood filled the network's queue (a switch's buffer): the first tries may be
            # dropped before they reach the board, as on a real network
            assert _ask(stranger, address, 11, Opcode.IDENTIFY, timeout=3, tries=10) is not None
            # the stranger took the board over with IDENTIFY; the host takes it back with its own
        device.identify()
        device.load_model(image)
        logits, _ = device.run_resident(image, x)
        status = device.status()
        device.close()
    want = golden.run_network(network, x, keep=False)[network.output.name]
    np.testing.assert_array_equal(logits, want)
    assert status["crc_errors"] + status["framing_errors"] > 0


@pytest.mark.slow
def test_ten_thousand_datagrams_at_five_percent_keep_every_image_bit_exact(ethernet_board_binary):
    """5 % of the datagrams each way dropped, duplicated, reordered and delayed over more than
    10,000 datagrams (the model loaded four times, then 48 images streamed): every load is
    committed whole (its CRC over DRAM matched) and every image equals golden."""
    from fpga.spec import golden
    from fpga.spec.image import preprocess
    from fpga.toolflow import quant
    from host.driver import Device
    from host.transport import open_transport
    from tests.netem import TO_DEVICE, TO_HOST

    network = quant.quantize_network("v1.1", size=SIZE)
    photos = [network.quantize_input(preprocess(p, SIZE)) for p in bundled_photos()]
    xs = [photos[i % len(photos)] for i in range(48)]
    with BoardProcess(ethernet_board_binary, "ethernet") as board:
        port = int(board.url.rsplit(":", 1)[1])
        fates = {"loss": 0.05, "duplicate": 0.05, "reorder": 0.05, "delay": 0.05}
        with LossyProxy(("127.0.0.1", port), seed=5, **fates) as proxy:
            # the wall clock: on the board's (its CPU time + a tenth of the wall) a datagram lost
            # while the board sleeps costs ten times its timeout, and 5 % of 10,000 are lost;
            # a resend of a request the board is still serving is harmless (the run rule)
            device = Device(open_transport(proxy.url))
            image = _small_image(device.identify(), network)
            for _ in range(4):  # the model's load again and again: windowed writes, ~2,600
                assert device.load_model(image, force=True).loaded  # datagrams each
            done = list(device.run_resident_many(image, xs))
            status = device.status()
            device.close()
    wants = [golden.run_network(network, x, keep=False)[network.output.name] for x in photos]
    for i, (logits, _) in enumerate(done):
        np.testing.assert_array_equal(logits, wants[i % len(photos)])
    assert status["model_loaded"] == 1
    carried = proxy.counts[TO_DEVICE]["received"] + proxy.counts[TO_HOST]["received"]
    assert carried >= 10_000, proxy.counts
    print(f"proxy: {proxy.counts}; {device.retried} resent")

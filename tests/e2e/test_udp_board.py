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
            assert device.load_model(image).loaded
            done = list(device.run_resident_many(image, xs))
            device.close()
    for (logits, _), x in zip(done, xs, strict=True):
        want = golden.run_network(network, x, keep=False)[network.output.name]
        np.testing.assert_array_equal(logits, want)
    print(f"proxy: {proxy.counts}; {device.retried} resent")

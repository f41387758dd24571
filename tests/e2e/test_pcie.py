"""The PCIe (XDMA-style) transport against an emulated endpoint: two FIFOs standing in for the
h2c/c2h character devices, bridged to the simulated board's byte stream."""

import os
import select
import socket
import threading

import numpy as np

from fpga.compiler.program import compile_network, execute
from fpga.spec import golden
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace
from fpga.toolflow import quant
from host.driver import Device
from host.transport import open_transport


def bridge(h2c_path, c2h_path, port, stop):
    sock = socket.create_connection(("127.0.0.1", port))
    h2c = os.open(h2c_path, os.O_RDONLY)  # waits for the host to open its write end
    c2h = os.open(c2h_path, os.O_WRONLY)
    try:
        while not stop.is_set():
            ready, _, _ = select.select([h2c, sock], [], [], 0.1)
            if h2c in ready:
                data = os.read(h2c, 65536)
                if not data:
                    break
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(c2h, view) :]
    finally:
        os.close(h2c)
        os.close(c2h)
        sock.close()


def test_network_over_the_pcie_transport(board, tmp_path):
    h2c, c2h = tmp_path / "xdma0_h2c_0", tmp_path / "xdma0_c2h_0"
    os.mkfifo(h2c)
    os.mkfifo(c2h)
    port = int(board.url.rsplit(":", 1)[1])
    stop = threading.Event()
    thread = threading.Thread(target=bridge, args=(h2c, c2h, port, stop), daemon=True)
    thread.start()
    device = Device(open_transport(f"pcie://{tmp_path / 'xdma0'}"))
    try:
        info = device.identify()
        device.write(BufferSpace.ACT_IN, 100, bytes(range(256)) * 8)  # > one frame
        network = quant.quantize_network("v1.1", size=48)
        image = network.quantize_input(preprocess(bundled_photos()[0], 48))
        program = compile_network(network, info.config())
        tensors, _ = execute(program, device, image)
    finally:
        device.close()
        stop.set()
        thread.join(timeout=5)
    expected = golden.run_network(network, image, keep=False)[network.output.name]
    np.testing.assert_array_equal(tensors[program.output], expected)

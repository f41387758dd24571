"""Whole networks through the simulated board (the SoC's RTL under Verilator) via the host driver.

Reduced input size in CI; full 227/224 runs are marked slow.
"""

import numpy as np
import pytest

from fpga.compiler.program import compile_network, execute
from fpga.spec import golden
from fpga.spec.image import bundled_photos, preprocess
from fpga.toolflow import quant


def run_network_on_board(board, variant, size, photo=0, weights_mode="indices"):
    device = board.open_device()
    try:
        info = device.identify()
        network = quant.quantize_network(variant, size=size)
        image = network.quantize_input(preprocess(bundled_photos()[photo], size))
        program = compile_network(network, info.config(), weights_mode=weights_mode)
        tensors, stats = execute(program, device, image)
        status = device.status()
    finally:
        device.close()
    return network, image, program, tensors, stats, status


@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant,size", [("v1.0", 67), ("v1.1", 64)])
def test_network_on_simulated_board_is_bit_exact(board, variant, size, weights_mode):
    network, image, program, tensors, stats, status = run_network_on_board(
        board, variant, size, weights_mode=weights_mode
    )
    reference = golden.run_network(network, image)
    for unit in program.units:  # every layer's output, not only the logits
        np.testing.assert_array_equal(tensors[unit.name], reference[unit.name], err_msg=unit.name)
    # the RTL's cycle counts equal the analytical model, layer by layer
    assert [s.cycles for s in stats] == [s.predicted_cycles for s in stats]
    assert status["crc_errors"] == 0 and status["engine_errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant,size", [("v1.0", 227), ("v1.1", 224)])
def test_full_size_network_on_simulated_board(board, variant, size, weights_mode):
    network, image, program, tensors, stats, status = run_network_on_board(
        board, variant, size, 1, weights_mode
    )
    expected = golden.run_network(network, image, keep=False)[network.output.name]
    np.testing.assert_array_equal(tensors[program.output], expected)
    assert status["engine_errors"] == 0


@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
def test_compressed_model_runs_on_the_board_from_its_indices(board, tmp_path, weights_mode):
    """A 6-bit .sqz model: the device holds codebook indices + the per-layer codebook, sent as
    bytes or as Huffman streams that the device decodes."""
    from fpga.spec.sqz import load_for_device, write_model
    from fpga.toolflow.compress import compress_network

    network, shared, _ = compress_network("v1.0", 6, None, 67)
    path = tmp_path / "m.sqz"
    write_model(path, network, shared, 6)
    network, compressed = load_for_device(path)
    device = board.open_device()
    try:
        program = compile_network(
            network, device.identify().config(), compressed, weights_mode=weights_mode
        )
        codebook_sizes = {
            len(blob)
            for unit in program.units
            for tile in unit.tiles
            for run in tile.runs
            for space, _, blob in run.consts
            if space == 4  # BufferSpace.CODEBOOK
        }
        assert codebook_sizes == {256}
        image = network.quantize_input(preprocess(bundled_photos()[2], 67))
        tensors, _ = execute(program, device, image)
        status = device.status()
    finally:
        device.close()
    expected = golden.run_network(network, image, keep=False)[network.output.name]
    np.testing.assert_array_equal(tensors[program.output], expected)
    assert status["engine_errors"] == 0

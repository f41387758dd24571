"""The network compiler's tiling, run on the engine emulator, equals fpga.golden bit for bit."""

import numpy as np
import pytest

from fpga import golden, quant
from fpga.compile import CompileError, compile_network, execute
from fpga.config import DEFAULT_CONFIG, SMALL_CONFIG
from fpga.emulator import EngineEmulator
from fpga.image import bundled_photos, preprocess
from fpga.layout import BufferSpace, predict_cycles


def run_both(variant, size, config, photo=1, weights_mode="indices"):
    net = quant.quantize_network(variant, size=size)
    x = net.quantize_input(preprocess(bundled_photos()[photo], size))
    program = compile_network(net, config, weights_mode=weights_mode)
    tensors, stats = execute(program, EngineEmulator(config), x)
    return net, program, tensors, stats, golden.run_network(net, x)


@pytest.mark.parametrize(
    "variant,size,config",
    [
        ("v1.0", 227, DEFAULT_CONFIG),
        ("v1.1", 224, DEFAULT_CONFIG),
        ("simple-bypass", 64, DEFAULT_CONFIG),
        ("complex-bypass", 64, DEFAULT_CONFIG),
        ("v1.1", 64, SMALL_CONFIG),  # tiny buffers: many bands, chunks and channel tiles
    ],
)
def test_tiled_program_equals_golden(variant, size, config):
    net, program, tensors, stats, ref = run_both(variant, size, config)
    for unit in program.units:
        np.testing.assert_array_equal(tensors[unit.name], ref[unit.name], err_msg=unit.name)
    assert program.output == net.output.name
    assert all(s.cycles == s.predicted_cycles for s in stats)


def test_concat_is_done_by_output_addressing():
    _, program, *_ = run_both("v1.1", 64, DEFAULT_CONFIG)
    fire = next(u for u in program.units if u.name == "fire2.concat")
    assert fire.layers == ["fire2.expand1x1", "fire2.expand3x3"]
    for tile in fire.tiles:
        assert len(tile.loads) == 1  # one band of the squeeze output feeds both convs
        offsets = [run.descriptor.out_group_offset for run in tile.runs]
        assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] > 0


def test_conv1_is_lowered_by_im2col():
    _, program, *_ = run_both("v1.1", 64, DEFAULT_CONFIG)  # 3x3/2 over 3 channels -> 27
    assert program.conv1_lowering == (3, 2, 0) and program.input_shape[0] == 27
    _, program, *_ = run_both("v1.0", 99, DEFAULT_CONFIG)
    assert program.conv1_lowering == (7, 2, 0) and program.input_shape[0] == 147
    conv1 = program.units[0]
    assert {run.descriptor.kernel for t in conv1.tiles for run in t.runs} == {1}


def test_link_bytes_and_utilization_are_reported():
    _, program, _, stats, _ = run_both("v1.0", 227, DEFAULT_CONFIG)
    total = sum(s.link_bytes for s in stats)
    assert total >= program.minimum_link_bytes > 0
    macs = sum(s.macs for s in stats)
    cycles = sum(s.cycles for s in stats)
    # every MAC of the network is accounted for (conv1 included, via the lowering)
    from fpga.model import summary

    assert macs == summary("v1.0", 227)["totals"]["macs"]
    assert cycles == sum(
        predict_cycles(r.descriptor, program.config)
        for u in program.units
        for t in u.tiles
        for r in t.runs
    )


@pytest.mark.parametrize("variant,config", [("v1.0", DEFAULT_CONFIG), ("v1.1", SMALL_CONFIG)])
def test_huffman_weight_mode_equals_golden_and_sends_fewer_bytes(variant, config):
    size = 67
    _, indices_program, _, indices_stats, _ = run_both(variant, size, config)
    net, program, tensors, stats, ref = run_both(variant, size, config, weights_mode="huffman")
    for unit in program.units:
        np.testing.assert_array_equal(tensors[unit.name], ref[unit.name], err_msg=unit.name)
    spaces = {
        space for u in program.units for t in u.tiles for r in t.runs for space, *_ in r.consts
    }
    assert BufferSpace.WEIGHT not in spaces and BufferSpace.HUFFMAN_STREAM in spaces
    assert program.minimum_link_bytes < indices_program.minimum_link_bytes
    assert sum(s.link_bytes for s in stats) < sum(s.link_bytes for s in indices_stats)


def test_unknown_weights_mode_is_a_clear_error():
    net = quant.quantize_network("v1.1", size=64)
    with pytest.raises(CompileError, match="unknown weights mode 'zip'"):
        compile_network(net, DEFAULT_CONFIG, weights_mode="zip")


def test_untileable_config_is_a_clear_error():
    net = quant.quantize_network("v1.1", size=64)
    tiny = SMALL_CONFIG.replace(weight_bytes=1024)
    with pytest.raises(CompileError, match="exceeds the weight buffer"):
        compile_network(net, tiny)

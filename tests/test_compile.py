"""The network compiler's tiling, run on the engine emulator, equals fpga.spec.golden bit for
bit."""

import numpy as np
import pytest

from fpga.compiler.check import check_commands
from fpga.compiler.cost import transfer_cycles
from fpga.compiler.emulator import EngineEmulator
from fpga.compiler.program import CompileError, compile_network, execute
from fpga.compiler.reference import run_resident
from fpga.compiler.resident import compile_resident
from fpga.compiler.traffic import sequential_cycles, transfer_totals
from fpga.spec import golden
from fpga.spec.config import DEFAULT_CONFIG, SMALL_CONFIG
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace, predict_cycles
from fpga.toolflow import quant


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
    from fpga.toolflow.model import summary

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


# -- tiling order: band outer (every chunk per row band) or weight chunk outer ------------------
def conv_orders(program):
    return {u.name: u.order for u in program.units if u.op == "conv"}


def test_chunk_outer_where_weights_would_be_reloaded_per_band():
    # v1.0 at 131: conv10 is 7x7 over 512 channels, 1000 outputs = 16 weight chunks; band outer
    # needs 2 bands (all 1000 channels of a row band in ACT_OUT), so every chunk loads twice
    net, program, tensors, stats, ref = run_both("v1.0", 131, DEFAULT_CONFIG)
    conv10 = next(u for u in program.units if u.name == "conv10")
    assert conv10.order == "chunk"
    chunks = [(t.store.g0, t.store.g1) for t in conv10.tiles]
    # a chunk's 64 channels of all 7 rows fit ACT_OUT: one taller band per chunk
    assert chunks == [(g, min(g + 8, 125)) for g in range(0, 125, 8)]  # 1000 = 125 groups
    for tile in conv10.tiles:
        (run,) = tile.runs
        assert run.descriptor.out_groups == tile.store.g1 - tile.store.g0
        assert run.descriptor.out_group_offset == 0
    forced = compile_network(net, DEFAULT_CONFIG, orders={"conv10": "band"})
    band = next(u for u in forced.units if u.name == "conv10")
    assert band.order == "band" and len(band.tiles) == 2 and len(band.tiles[0].runs) == 16
    for unit in program.units:
        np.testing.assert_array_equal(tensors[unit.name], ref[unit.name], err_msg=unit.name)
    assert all(s.cycles == s.predicted_cycles for s in stats)
    # the streamed link carries conv10's weights once instead of once per band
    _, forced_stats = execute(
        forced,
        EngineEmulator(DEFAULT_CONFIG),
        net.quantize_input(preprocess(bundled_photos()[1], 131)),
    )
    link = {s.name: s.link_bytes for s in stats}
    assert link["conv10"] < {s.name: s.link_bytes for s in forced_stats}["conv10"]


def test_concat_chunk_outer_stores_each_chunk_at_its_channel_offset():
    net = quant.quantize_network("v1.1", size=64)
    x = net.quantize_input(preprocess(bundled_photos()[1], 64))
    program = compile_network(net, SMALL_CONFIG, orders={"*": "chunk"})
    assert set(conv_orders(program).values()) == {"chunk"}
    fire = next(u for u in program.units if u.name == "fire2.concat")
    expand1x1 = net.layer("fire2.expand1x1").weight.shape[0] // SMALL_CONFIG.rows
    slices = {}
    for tile in fire.tiles:
        (run,) = tile.runs
        slices.setdefault(run.layer, set()).add((tile.store.g0, tile.store.g1))
    assert min(slices["fire2.expand1x1"])[0] == 0
    assert max(g1 for _, g1 in slices["fire2.expand1x1"]) == expand1x1
    assert min(slices["fire2.expand3x3"])[0] == expand1x1
    assert max(g1 for _, g1 in slices["fire2.expand3x3"]) == fire.shape[0] // SMALL_CONFIG.rows
    tensors, stats = execute(program, EngineEmulator(SMALL_CONFIG), x)
    ref = golden.run_network(net, x)
    for unit in program.units:
        np.testing.assert_array_equal(tensors[unit.name], ref[unit.name], err_msg=unit.name)
    assert all(s.cycles == s.predicted_cycles for s in stats)


@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
def test_chunk_outer_runs_resident_equal_to_golden(weights_mode):
    net = quant.quantize_network("v1.0", size=67)
    x = net.quantize_input(preprocess(bundled_photos()[0], 67))
    program = compile_network(net, DEFAULT_CONFIG, weights_mode=weights_mode, orders={"*": "chunk"})
    resident = compile_resident(program, input_size=67)
    check_commands(resident)
    logits, stats = run_resident(
        resident, resident.initial_dram(), x, EngineEmulator(DEFAULT_CONFIG)
    )
    np.testing.assert_array_equal(logits, golden.run_network(net, x)[net.output.name])
    assert stats.engine_cycles == sum(program.predicted_cycles().values())


def unit_transfer_cycles(resident):
    """Per unit: fpga.compiler.traffic's sequential estimate of its transfers (+ model bytes
    loaded)."""
    out = {}
    for name, (a, b) in resident.unit_commands.items():
        t = transfer_totals(resident, commands=resident.commands[a:b])
        out[name] = transfer_cycles(t), t["loaded_model"]
    return out


@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant,size", [("v1.0", 227), ("v1.1", 224)])
def test_chosen_order_never_moves_more_than_band_outer(variant, size, weights_mode):
    net = quant.quantize_network(variant, size=size)
    programs = {
        order: compile_network(
            net, DEFAULT_CONFIG, weights_mode=weights_mode, orders=order and {"*": order}
        )
        for order in ("band", "chunk", None)
    }
    chosen = programs[None]
    assert set(conv_orders(programs["band"]).values()) == {"band"}
    moved = {
        o: unit_transfer_cycles(compile_resident(p, input_size=size)) for o, p in programs.items()
    }
    engine = {
        o: dict(zip([u.name for u in p.units], p.predicted_cycles().values(), strict=True))
        for o, p in programs.items()
    }
    switched = []
    for name, order in conv_orders(chosen).items():
        band, picked = moved["band"][name], moved[None][name]
        assert picked == moved[order][name]
        # the device's transfer cycles and the model bytes it loads: never more than band outer
        assert picked[0] <= band[0] and picked[1] <= band[1], name
        # the choice is right by fpga.compiler.traffic's own count: engine + transfer cycles
        other = "chunk" if order == "band" else "band"
        total = {o: moved[o][name][0] + engine[o][name] for o in (order, other)}
        assert total[order] <= total[other], name
        if order == "chunk":
            switched.append(name)
    assert "conv10" in switched
    # whole image: fewer model bytes per image and fewer sequential cycles
    before = compile_resident(programs["band"], input_size=size)
    after = compile_resident(chosen, input_size=size)
    assert transfer_totals(after)["loaded_model"] < transfer_totals(before)["loaded_model"] / 2
    assert sequential_cycles(after)["total"] < sequential_cycles(before)["total"]
    assert chosen.minimum_link_bytes == programs["band"].minimum_link_bytes


def test_unknown_order_is_a_clear_error():
    net = quant.quantize_network("v1.1", size=64)
    with pytest.raises(CompileError, match="unknown tiling order 'zigzag'"):
        compile_network(net, DEFAULT_CONFIG, orders={"*": "zigzag"})


def _pool_network(rng, channels: int, size: int, ceil_mode: bool):
    """conv1 (3x3/2 to ``channels``) -> a 3x3/2 max pool (ceil or floor mode) -> average pool."""
    from fpga.spec.network import QLayer, QuantizedNetwork

    conv1 = QLayer(
        "conv1",
        "conv",
        ("input",),
        0.1,
        weight=(rng.integers(-3, 4, (channels, 3, 3, 3)) * 9).astype(np.int8),
        bias=rng.integers(-100, 100, channels).astype(np.int32),
        multiplier=rng.integers(2**15, 2**16, channels),
        shift=rng.integers(10, 14, channels),
        weight_scale=np.full(channels, 0.01),
        stride=2,
        relu=False,
    )
    pool = QLayer("pool1", "maxpool", ("conv1",), 0.1, ceil_mode=ceil_mode)
    average = QLayer("avgpool", "avgpool", ("pool1",), 0.01)
    return QuantizedNetwork("pool-test", size, 0.5, [conv1, pool, average])


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_max_pool_tilings_equal_golden_streamed_and_resident(split):
    """The max pool's two tilings (whole rows of some channel groups; every group in blocks of
    rows x columns whose input columns overlap) on random shapes, ceil and floor mode, bit for
    bit against golden through the streamed program and from DRAM; both tilings occur."""
    rng = np.random.default_rng(7)
    kinds = set()
    for config in (SMALL_CONFIG, DEFAULT_CONFIG):
        # the last: nine pixels of every channel overflow the small config's ACT_IN
        for channels, size, ceil_mode in [
            (8, 97, True),
            (24, 120, False),
            (40, 74, True),
            (1100, 22, False),
        ]:
            net = _pool_network(rng, channels, size, ceil_mode)
            x = rng.integers(-128, 128, (3, size, size)).astype(np.int8)
            reference = golden.run_network(net, x)
            program = compile_network(net, config, split=split)
            pool = next(u for u in program.units if u.op == "maxpool")
            g = -(-channels // config.rows)
            for tile in pool.tiles:
                if tile.store.width < pool.shape[2]:
                    kinds.add("columns")
                    assert (tile.store.g0, tile.store.g1) == (0, g)
                elif tile.store.g1 - tile.store.g0 < g:
                    kinds.add("groups")
            tensors, _ = execute(program, EngineEmulator(config), x)
            np.testing.assert_array_equal(tensors["pool1"], reference["pool1"])
            resident = compile_resident(program, input_size=size)
            check_commands(resident)
            dram = resident.initial_dram()
            logits, _ = run_resident(resident, dram, x, EngineEmulator(config))
            np.testing.assert_array_equal(logits, reference["avgpool"])
            np.testing.assert_array_equal(resident.read_tensor(dram, "pool1"), reference["pool1"])
    assert kinds == {"columns", "groups"}

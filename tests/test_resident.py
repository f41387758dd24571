"""The resident path: the command record (fpga.spec.commands), the DRAM map and the resident
compiler (fpga.compiler.resident), the checker (.check) and the reference executor (.reference).

Whole v1.0/v1.1 networks (reduced size) run from a bytearray DRAM through the command list and
the engine emulator; logits and every intermediate tensor (read from its DRAM region right after
its unit's last STORE) equal fpga.spec.golden bit for bit, in both weights modes and both input
modes, from either input/output slot (the program's input LOADs and output STOREs are relocated per
run).
"""

import dataclasses

import numpy as np
import pytest

from fpga.compiler.check import check_commands
from fpga.compiler.emulator import EngineEmulator
from fpga.compiler.program import compile_network, execute
from fpga.compiler.reference import run_commands, run_resident
from fpga.compiler.resident import compile_resident
from fpga.compiler.traffic import device_cycles, sequential_cycles, transfer_totals
from fpga.spec import golden
from fpga.spec.commands import (
    COMMAND_BYTES,
    COMMAND_DTYPE,
    SLOTS,
    Flag,
    Opcode,
    ResidentError,
    command,
    command_fields,
    pack_commands,
    unpack_commands,
)
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.errors import UserError
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.layout import BufferSpace, LayerDescriptor, Op
from fpga.toolflow import quant

SIZES = {"v1.0": 67, "v1.1": 64}


@pytest.fixture(scope="module")
def networks():
    cache = {}

    def get(variant):
        if variant not in cache:
            size = SIZES[variant]
            network = quant.quantize_network(variant, size=size)
            image = network.quantize_input(preprocess(bundled_photos()[0], size))
            cache[variant] = network, image
        return cache[variant]

    return get


def test_command_record_is_one_table():
    assert COMMAND_BYTES == 32 == sum(bits for _, bits in command_fields()) // 8
    assert [name for name, _ in command_fields()] == list(COMMAND_DTYPE.names)
    records = [
        command(Opcode.LOAD, BufferSpace.WEIGHT, length=5, dram_addr=0x1234_5678, count=3),
        command(Opcode.RUN),
        command(Opcode.END),
    ]
    blob = pack_commands(records)
    assert len(blob) == 3 * COMMAND_BYTES
    assert blob[:4] == bytes([Opcode.LOAD, BufferSpace.WEIGHT, 0, 0])
    assert blob[8:12] == (0x1234_5678).to_bytes(4, "little")
    back = unpack_commands(blob)
    assert list(back["opcode"]) == [Opcode.LOAD, Opcode.RUN, Opcode.END]
    assert int(back[0]["count"]) == 3 and int(back[1]["count"]) == 0
    assert 0 not in set(Opcode)  # zeroed DRAM is not a command


class WriteLog:
    """An engine wrapper that logs writes and reads (merging contiguous ones)."""

    def __init__(self, engine):
        self.engine, self.writes, self.reads = engine, [], []

    @staticmethod
    def _merge(log, space, offset, data):
        if log and log[-1][0] == space and log[-1][1] + len(log[-1][2]) == offset:
            log[-1] = (space, log[-1][1], log[-1][2] + data)
        else:
            log.append((space, offset, data))

    def write(self, space, offset, data):
        self._merge(self.writes, int(space), offset, bytes(data))
        self.engine.write(space, offset, data)

    def read(self, space, offset, length):
        data = self.engine.read(space, offset, length)
        self._merge(self.reads, int(space), offset, bytes(data))
        return data

    @property
    def config(self):
        return self.engine.config

    def run(self, expected_cycles=0, flags=0):
        return self.engine.run(expected_cycles, flags=flags)


@pytest.mark.parametrize(
    "device_im2col,split",
    [(True, False), (False, False), (True, True)],
    ids=["device-im2col", "host-im2col", "split"],
)
@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_network_from_dram_equals_golden(networks, variant, weights_mode, device_im2col, split):
    """The network from DRAM on the reference executor, bit for bit against golden: every
    tensor, the logits, from either slot; ``split``: double-buffered (SPLIT runs in alternating
    halves, a WAIT only where a command touches what the run under way owns; the executor
    refuses any such touch without it)."""
    network, image = networks(variant)
    program = compile_network(network, DEFAULT_CONFIG, weights_mode=weights_mode, split=split)
    resident = compile_resident(program, device_im2col=device_im2col, input_size=SIZES[variant])
    check_commands(resident)
    reference = golden.run_network(network, image)
    dram = resident.initial_dram()
    ends = {end - 1: name for name, (_, end) in resident.unit_commands.items()}
    checked = []

    def after(index, record):
        # a unit's tensor is complete after its last STORE; later units may reuse its bytes
        if index in ends:
            name = ends[index]
            got = resident.read_tensor(dram, name)
            np.testing.assert_array_equal(got, reference[name], err_msg=name)
            checked.append(name)

    engine = WriteLog(EngineEmulator(DEFAULT_CONFIG))
    logits, stats = run_resident(resident, dram, image, engine, after=after)
    np.testing.assert_array_equal(logits, reference[network.output.name])
    assert checked == [unit.name for unit in program.units]
    assert stats.engine_cycles == sum(program.predicted_cycles().values())
    totals = transfer_totals(resident)  # the static count equals what was moved
    assert (totals["loaded"], totals["stored"]) == (stats.loaded_bytes, stats.stored_bytes)
    assert totals["rows"] == stats.dma_requests and totals["commands"] == stats.commands

    # the LOADs move the bytes fpga.compiler.program.execute writes, in its order (conv1's gathered
    # columns aside: those are ACT_IN writes of another shape), STOREs read what it reads
    if split:  # the runs in their halves, WAITs only between units; the timeline predicts
        runs = resident.commands[resident.commands["opcode"] == Opcode.RUN]
        assert [bool(int(f) & Flag.SPLIT) for f in runs["flags"]] == _run_units(program)
        waits = int(np.sum(resident.commands["opcode"] == Opcode.WAIT))
        assert 0 < waits <= len(program.units), waits
        cycles = device_cycles(resident)
        assert cycles["engine"] == stats.engine_cycles
        assert cycles["total"] < sequential_cycles(resident)["total"]
    streamed = WriteLog(EngineEmulator(DEFAULT_CONFIG))
    execute(program, streamed, image)
    if split:
        pass  # execute's writes land in whole buffers, the split program's in halves
    elif device_im2col:
        first = [w for w in streamed.writes if w[0] != BufferSpace.ACT_IN]
        assert first == [w for w in engine.writes if w[0] != BufferSpace.ACT_IN]
    else:
        assert streamed.writes == engine.writes
    if not split:
        assert streamed.reads == engine.reads

    # the same image from slot 1: the same logits, slot 0's input and output bytes untouched
    assert SLOTS == 2
    slot0 = resident.input_address(0), resident.input_slot_bytes
    out0 = resident.output_address(0), resident.output_slot_bytes
    before = [bytes(dram[base : base + size]) for base, size in (slot0, out0)]
    again, again_stats = run_resident(resident, dram, image, EngineEmulator(DEFAULT_CONFIG), slot=1)
    np.testing.assert_array_equal(again, logits)
    assert (again_stats.loaded_bytes, again_stats.stored_bytes) == (
        stats.loaded_bytes,
        stats.stored_bytes,
    )
    slot1 = resident.input_address(1), resident.input_slot_bytes
    out1 = resident.output_address(1), resident.output_slot_bytes
    after_run = [bytes(dram[base : base + size]) for base, size in (slot0, out0, slot1, out1)]
    assert after_run == before + before  # slot 0 untouched; slot 1 holds the same bytes

    # a second image with the same loaded model (nothing but the input changes), in slot 1:
    # slot 0 still holds the first image, so a run reading it would give the first logits
    other = network.quantize_input(preprocess(bundled_photos()[1], SIZES[variant]))
    logits, _ = run_resident(resident, dram, other, EngineEmulator(DEFAULT_CONFIG), slot=1)
    expected = golden.run_network(network, other, keep=False)[network.output.name]
    np.testing.assert_array_equal(logits, expected)
    assert [bytes(dram[base : base + size]) for base, size in (slot0, out0)] == before


def test_map_regions_and_arena_liveness(networks):
    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG)
    resident = compile_resident(program, input_size=64)
    regions = resident.describe()
    spans = sorted((base, base + size) for name, (base, size) in regions.items() if name != "total")
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert regions["total"][1] == spans[-1][1]
    assert resident.load_size == regions["input"][0] + regions["input"][1]
    # tensors alive at the same time never share bytes; the arena is smaller than their sum
    items = list(resident.tensors.items())
    for i, (a, (a_base, a_size)) in enumerate(items):
        for b, (b_base, b_size) in items[i + 1 :]:
            (a0, a1), (b0, b1) = resident.lifetimes[a], resident.lifetimes[b]
            if not (a1 < b0 or b1 < a0):
                assert a_base + a_size <= b_base or b_base + b_size <= a_base, (a, b)
    assert regions["activations"][1] < sum(size for _, size in resident.tensors.values())
    # identical constant blobs are stored once: fewer model bytes than constant LOAD bytes
    model = regions["model"]
    loads = resident.commands[resident.commands["opcode"] == Opcode.LOAD]
    absolute = (loads["flags"] & Flag.INPUT) == 0
    in_model = (loads["dram_addr"] >= model[0]) & (loads["dram_addr"] < model[0] + model[1])
    in_model &= absolute
    assert model[1] < int(loads["length"][in_model].astype(np.int64).sum())


@pytest.mark.parametrize("device_im2col", [True, False], ids=["device-im2col", "host-im2col"])
def test_input_and_output_are_relocated_into_slots(networks, device_im2col):
    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG)
    resident = compile_resident(program, device_im2col=device_im2col, input_size=64)
    commands = resident.commands
    opcode, flags = commands["opcode"], commands["flags"]
    # every INPUT-flagged command is a LOAD, every OUTPUT-flagged one a STORE; both exist
    assert (flags & Flag.INPUT).any() and (flags & Flag.OUTPUT).any()
    assert set(opcode[(flags & Flag.INPUT) != 0]) == {Opcode.LOAD}
    assert set(opcode[(flags & Flag.OUTPUT) != 0]) == {Opcode.STORE}
    assert not (((flags & Flag.INPUT) != 0) & ((flags & Flag.OUTPUT) != 0)).any()
    # conv1's gathers: WINDOWS and INPUT together
    windows = (flags & Flag.WINDOWS) != 0
    assert windows.sum() == (31 * 3 if device_im2col else 0)
    assert (flags[windows] & Flag.INPUT).all()

    # rows: flagged ones inside [0, slot bytes), no absolute one in the input/output regions
    slots = {Flag.INPUT: resident.input_slot_bytes, Flag.OUTPUT: resident.output_slot_bytes}
    relocated = [resident.regions["input"], resident.regions["output"]]
    for rec in commands[(opcode == Opcode.LOAD) | (opcode == Opcode.STORE)]:
        first = int(rec["dram_addr"])
        end = first + (int(rec["count"]) - 1) * int(rec["dram_stride"]) + int(rec["length"])
        flag = int(rec["flags"]) & (Flag.INPUT | Flag.OUTPUT)
        if flag:
            assert end <= slots[Flag(flag)]
        else:
            assert all(end <= base or base + size <= first for base, size in relocated)

    # the map: SLOTS aligned slots per region; one image's bytes per run
    assert SLOTS == 2 and resident.report()["slots"] == SLOTS
    for name, slot_bytes, address in (
        ("input", resident.input_slot_bytes, resident.input_address),
        ("output", resident.output_slot_bytes, resident.output_address),
    ):
        base, size = resident.regions[name]
        assert size == SLOTS * slot_bytes and slot_bytes % 64 == 0
        assert [address(k) for k in range(SLOTS)] == [base + k * slot_bytes for k in range(SLOTS)]
        for slot in (-1, SLOTS):
            with pytest.raises(ValueError, match="slot"):
                address(slot)
    assert resident.input_slot_bytes - 64 < resident.input_bytes() <= resident.input_slot_bytes
    assert resident.output_bytes() <= resident.output_slot_bytes
    assert resident.load_size == sum(resident.regions["input"])
    assert resident.commit_size == resident.regions["input"][0]
    assert len(resident.load_bytes()) == resident.load_size
    assert not any(resident.load_bytes()[resident.commit_size :])  # every input slot zeroed
    totals = transfer_totals(resident)
    gathered = commands[(flags & Flag.INPUT) != 0]
    assert totals["loaded_input"] == int(
        (gathered["count"].astype(np.int64) * gathered["length"]).sum()
    )
    assert totals["loaded_output"] == 0


def test_a_map_beyond_the_dram_names_the_region(networks):
    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG)
    total = compile_resident(program, input_size=64).describe()["total"][1]
    with pytest.raises(ResidentError, match="the activations region") as failure:
        compile_resident(program, dram_size=total - 1, input_size=64)
    assert isinstance(failure.value, UserError)
    with pytest.raises(ResidentError, match="the model region"):
        compile_resident(program, dram_size=1 << 16, input_size=64)
    with pytest.raises(ResidentError, match="input size"):
        compile_resident(program, input_size=70)


def _run_units(program):
    """Per RUN command of the program, whether its unit is double-buffered."""
    return [unit.split for unit in program.units for tile in unit.tiles for _ in tile.runs]


def test_split_program_hazards_are_refused(networks):
    """A double-buffered program: every WAIT is needed (dropping any one makes the checker and
    the reference executor refuse a command touching what the run under way owns), the RUNs
    alternate halves, and a SPLIT run whose tile leaves its half is the engine's error."""
    network, image = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG, weights_mode="huffman", split=True)
    resident = compile_resident(program, input_size=64)
    check_commands(resident)
    commands = resident.commands
    waits = np.flatnonzero(commands["opcode"] == Opcode.WAIT)
    assert len(waits) > 3
    for index in waits:
        without = np.delete(commands, index)
        with pytest.raises(ResidentError, match="owns"):
            check_commands(resident, commands=without)
    # the reference executor refuses the same program on its own
    dram = resident.initial_dram()
    resident.write_input(dram, image)
    base = resident.program_address
    dram[base : base + len(commands) * COMMAND_BYTES] = pack_commands(
        np.append(np.delete(commands, waits[0]), commands[-1:])
    )
    slots = {"input_base": resident.input_address(0), "output_base": resident.output_address(0)}
    with pytest.raises(ResidentError, match="owns"):
        run_commands(dram, EngineEmulator(DEFAULT_CONFIG), base, **slots)
    # both halves are used, by ACT_IN and by WEIGHT
    flags = commands[commands["opcode"] == Opcode.RUN]["flags"].astype(int)
    for high in (Flag.HIGH_ACT_IN, Flag.HIGH_WEIGHT):
        assert 0 < int(np.sum(flags & high != 0)) < len(flags)
    # a SPLIT run whose tile does not fit its half: the engine's error
    engine = EngineEmulator(DEFAULT_CONFIG)
    desc = LayerDescriptor(Op.MAXPOOL, kernel=3, stride=2, in_groups=1, in_h=64, in_w=64,
                           out_h=31, out_w=31, out_groups=1)  # fmt: skip
    engine.write(BufferSpace.DESCRIPTOR, 0, desc.pack())
    assert engine.run() > 0  # 64 x 64 x 8 bytes: the whole ACT_IN, not half of it
    with pytest.raises(ValueError, match="beyond its half"):
        engine.run(flags=Flag.SPLIT)
    half = LayerDescriptor(Op.MAXPOOL, kernel=3, stride=2, in_groups=1, in_h=32, in_w=64,
                           out_h=15, out_w=31, out_groups=1)  # fmt: skip
    engine.write(BufferSpace.DESCRIPTOR, 0, half.pack())
    engine.run(flags=Flag.SPLIT | Flag.HIGH_ACT_IN)


def test_check_commands_refuses_what_the_device_must_not_run(networks):
    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG)
    resident = compile_resident(program, input_size=64)
    check_commands(resident)
    total = resident.describe()["total"][1]
    flags = resident.commands["flags"]
    is_load = resident.commands["opcode"] == Opcode.LOAD
    is_store = resident.commands["opcode"] == Opcode.STORE
    loads = np.flatnonzero(is_load & ((flags & Flag.INPUT) == 0))  # absolute (model) LOADs
    stores = np.flatnonzero(is_store & ((flags & Flag.OUTPUT) == 0))  # into the arena
    inputs = np.flatnonzero(flags & Flag.INPUT)
    outputs = np.flatnonzero(flags & Flag.OUTPUT)

    def refused(index, match, dram_size=None, **fields):
        commands = resident.commands.copy()
        for name, value in fields.items():
            commands[index][name] = value
        with pytest.raises(ResidentError, match=match):
            check_commands(resident, dram_size, commands)

    refused(loads[0], "outside every region", dram_addr=total + 100)
    refused(loads[0], "beyond the 268,435,456-byte DRAM", dram_addr=resident.dram_size - 8)
    refused(loads[0], "beyond the 4,096-byte DRAM", dram_size=4096)
    refused(loads[3], "outside every region", dram_addr=resident.regions["program"][0] - 8)
    refused(stores[0], "STORE into the model region", dram_addr=0)
    refused(stores[0], "only ACT_OUT", space=BufferSpace.WEIGHT)
    refused(loads[0], "unknown opcode 0", opcode=0)
    refused(loads[0], "unknown buffer space 9", space=9)
    refused(inputs[0], "of ACT_IN", buffer_offset=DEFAULT_CONFIG.act_in_bytes)
    refused(len(resident.commands) - 1, "no END", opcode=Opcode.RUN)
    refused(loads[0], "unknown flags 0x8 for LOAD", flags=8)
    refused(stores[0], "unknown flags 0x1 for STORE", flags=Flag.WINDOWS)
    windows = np.flatnonzero(resident.commands["flags"] & Flag.WINDOWS)
    assert len(windows) == 31 * 3  # v1.1's conv1: per output row and kernel row
    # 1000 windows of 3 pixels x 3 channels, 2 pixels apart: 999 * 6 + 9 bytes
    refused(windows[0], "spans 6,003 bytes; the window buffer has 1,024", count=1000)

    # relocation: INPUT only on a LOAD, OUTPUT only on a STORE, flagged rows inside their slot,
    # no absolute address in the input or output region
    refused(outputs[0], "unknown flags 0x2 for STORE", flags=Flag.INPUT)
    refused(outputs[0], "unknown flags 0x6 for STORE", flags=Flag.INPUT | Flag.OUTPUT)
    refused(loads[0], "unknown flags 0x4 for LOAD", flags=Flag.OUTPUT)
    refused(inputs[0], "unknown flags 0x7 for LOAD", flags=Flag.WINDOWS | Flag.INPUT | Flag.OUTPUT)
    slot = resident.input_slot_bytes
    refused(inputs[0], f"of the input slot \\({slot:,} bytes\\)", dram_addr=slot - 1)
    refused(inputs[0], "beyond the 4,096-byte DRAM", dram_size=4096)
    refused(outputs[0], "of the output slot", dram_addr=resident.output_slot_bytes)
    input_base, output_base = resident.input_address(0), resident.output_address(0)
    relocates = "absolute address in the {} region; every run relocates"
    refused(loads[0], relocates.format("input"), dram_addr=input_base)
    refused(stores[0], relocates.format("output"), dram_addr=output_base)
    refused(stores[0], "absolute address in the input region", dram_addr=input_base)
    refused(inputs[0], "absolute address in the input region", flags=0, dram_addr=input_base)
    refused(outputs[0], "absolute address in the output region", flags=0, dram_addr=output_base)
    refused(loads[0], relocates.format("input"), dram_addr=input_base - 8)  # overlapping it


def test_reference_executor_errors_like_the_sequencer():
    dram = bytearray(4096)
    engine = EngineEmulator(DEFAULT_CONFIG)
    dram[0:64] = bytes(64)  # zeroed DRAM: opcode 0
    with pytest.raises(ResidentError, match="unknown opcode 0"):
        run_commands(dram, engine, 0)
    dram[0:64] = pack_commands(
        [command(Opcode.LOAD, BufferSpace.ACT_IN, length=16, dram_addr=4090), command(Opcode.END)]
    )
    with pytest.raises(ResidentError, match="outside the 4,096-byte DRAM"):
        run_commands(dram, engine, 0)
    with pytest.raises(ResidentError, match="fetch"):
        run_commands(dram, engine, 4090)
    # an INPUT / OUTPUT-flagged row is relocated by the run's base before the range check
    dram[0:64] = pack_commands(
        [
            command(Opcode.LOAD, BufferSpace.ACT_IN, flags=Flag.INPUT, length=16, dram_addr=8),
            command(Opcode.END),
        ]
    )
    assert run_commands(dram, engine, 0, input_base=4000).loaded_bytes == 16
    with pytest.raises(ResidentError, match=r"DRAM \[4,090, 4,106\) is outside"):
        run_commands(dram, engine, 0, input_base=4082)
    assert run_commands(dram, engine, 0, output_base=4082).loaded_bytes == 16  # not its base
    dram[0:64] = pack_commands(
        [
            command(Opcode.STORE, BufferSpace.ACT_OUT, flags=Flag.OUTPUT, length=4, dram_addr=4),
            command(Opcode.END),
        ]
    )
    dram[104:108] = dram[2004:2008] = b"\xff" * 4
    run_commands(dram, engine, 0, input_base=100, output_base=2000)
    assert bytes(dram[2004:2008]) == bytes(engine.read(BufferSpace.ACT_OUT, 0, 4)) != b"\xff" * 4
    assert bytes(dram[104:108]) == b"\xff" * 4
    # count 0 / length 0 move nothing
    dram[0:64] = pack_commands(
        [command(Opcode.LOAD, BufferSpace.ACT_IN, length=0, dram_addr=1 << 30), command(Opcode.END)]
    )
    assert run_commands(dram, engine, 0).loaded_bytes == 0


def test_full_size_link_bytes_and_map():
    """v1.0 at 227 (compiled, not run): the link carries the image and the logits only."""
    network = quant.quantize_network("v1.0", size=227)
    program = compile_network(network, DEFAULT_CONFIG, weights_mode="huffman")
    resident = compile_resident(program, input_size=227)
    check_commands(resident)
    link = resident.link_bytes_per_image()
    assert link == 3 * 227 * 227 + 4 * 1000 == 158_587  # the "about 155 KB"
    host = compile_resident(program, input_size=227, device_im2col=False)
    print(
        f"\nv1.0@227 resident: link {link:,} B/image (host im2col: "
        f"{host.link_bytes_per_image():,}); streamed minimum {program.minimum_link_bytes:,}; "
        f"map {resident.report()['regions']}; {len(resident.commands):,} commands"
    )
    assert link < program.minimum_link_bytes / 70
    for image in (resident, host):
        totals, cycles = transfer_totals(image), sequential_cycles(image)
        print(
            f"  {'device' if image.device_im2col else 'host'} im2col: map total "
            f"{image.describe()['total'][1]:,} B; per image loads {totals['loaded']:,} B "
            f"(model {totals['loaded_model']:,}), stores {totals['stored']:,} B in "
            f"{totals['rows']:,} DMA rows; sequential sequencer ~{cycles['total']:,} cycles = "
            f"{cycles['total'] / cycles['engine']:.2f}x the engine's {cycles['engine']:,}"
        )


def test_a_row_too_wide_for_a_half_is_tiled_over_shorter_rows(networks):
    """A 1x1 conv whose input row does not fit half a buffer (v1.0's lowered conv1, 147
    channels, with an 8 KiB ACT_IN: 31 pixels x 152 bytes > 4 KiB) is double-buffered all the
    same, its pixels seen as shorter rows (Unit.view; the same bytes in DRAM, the image's rows
    gathered in pieces): bit-exact from DRAM and through execute, every WINDOWS span inside its
    image row."""
    network, image = networks("v1.0")
    config = DEFAULT_CONFIG.replace(act_in_bytes=8 * 1024)
    program = compile_network(network, config, split=True)
    conv1 = program.units[0]
    assert conv1.name == "conv1" and conv1.split and conv1.view is not None
    rows, width = conv1.view
    assert rows * width == 31 * 31 and width < 31 and conv1.shape[1:] == (31, 31)
    resident = compile_resident(program, input_size=SIZES["v1.0"])
    check_commands(resident)
    reference = golden.run_network(network, image)
    logits, _ = run_resident(resident, resident.initial_dram(), image, EngineEmulator(config))
    np.testing.assert_array_equal(logits, reference[network.output.name])
    tensors, _ = execute(program, EngineEmulator(config), image)
    for unit in program.units:
        np.testing.assert_array_equal(tensors[unit.name], reference[unit.name], err_msg=unit.name)
    gathers = resident.commands[(resident.commands["flags"] & Flag.INPUT) != 0]
    assert len(set(gathers["count"].tolist())) > 1  # rows cut into pieces at the tiles' edges
    assert int(gathers["count"].sum()) == 31 * 31 * 7  # every pixel and kernel row once


def test_weights_are_loaded_ahead_of_their_run_in_pieces(networks):
    """Double-buffered: the next weight chunk's Huffman stream goes into the WEIGHT half the run
    under way does not own, as sub-streams spread over the RUNs before the run that needs it
    (each decoding to its own place); that run loads no weights of its own. The held-weights
    rule: the same index bytes under another codebook are not held."""
    from fpga.compiler.program import BufferContents
    from fpga.spec.commands import half_bytes

    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG, weights_mode="huffman", split=True)
    resident = compile_resident(program, input_size=64)
    model = resident.model
    half = half_bytes(BufferSpace.WEIGHT, DEFAULT_CONFIG)
    owned, ahead, pieces_between = None, 0, 0
    for rec in resident.commands:
        op = int(rec["opcode"])
        if op == Opcode.RUN:
            flags = int(rec["flags"])
            owned = bool(flags & Flag.HIGH_WEIGHT) if flags & Flag.SPLIT else None
            ahead = max(ahead, pieces_between)
            pieces_between = 0
        elif op == Opcode.LOAD and int(rec["space"]) == BufferSpace.HUFFMAN_STREAM:
            at = int(rec["dram_addr"]) - resident.regions["model"][0]
            dest = int.from_bytes(model[at + 4 : at + 8], "little")
            if owned is not None:
                assert (dest >= half) != owned  # never the half the run under way reads
            pieces_between += 1
    streams = int(np.sum(resident.commands["space"][resident.commands["opcode"] == Opcode.LOAD]
                         == BufferSpace.HUFFMAN_STREAM))  # fmt: skip
    chunks = len({c[2] for u in program.units for t in u.tiles for r in t.runs for c in r.consts
                  if c[0] == BufferSpace.HUFFMAN_STREAM})  # fmt: skip
    assert streams > chunks  # cut into sub-streams
    assert ahead >= 1

    held = BufferContents()
    blob = bytes(range(16))
    first = [(BufferSpace.CODEBOOK, 0, bytes(256)), (BufferSpace.WEIGHT, 0, blob)]
    other = [(BufferSpace.CODEBOOK, 0, bytes([1]) * 256), (BufferSpace.WEIGHT, 0, blob)]
    for space, offset, data in first:
        assert held.write(space, offset, data, True, first)
    assert held.holds(first[1], first) and not held.holds(other[1], other)
    assert held.needed(first) == [first[1]] and held.needed(other) == other


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_the_35t_config_runs_double_buffered(networks, variant):
    """The A7-35T's own config (``arty35``: 16 KiB ACT_OUT, index weights only) double-buffered:
    the whole network from DRAM bit-exact on the reference executor (every WAIT checked), its
    predicted device cycles fewer than without double buffering."""
    from fpga.spec.boards import get_board

    config = get_board("arty_a7").config
    network, image = networks(variant)
    cycles = {}
    for split in (True, False):
        program = compile_network(network, config, split=split)
        resident = compile_resident(program, input_size=SIZES[variant])
        check_commands(resident)
        cycles[split] = device_cycles(resident)["total"]
    logits, _ = run_resident(resident, resident.initial_dram(), image, EngineEmulator(config))
    np.testing.assert_array_equal(logits, golden.run_network(network, image)[network.output.name])
    program = compile_network(network, config, split=True)
    resident = compile_resident(program, input_size=SIZES[variant])
    logits, _ = run_resident(resident, resident.initial_dram(), image, EngineEmulator(config))
    np.testing.assert_array_equal(logits, golden.run_network(network, image)[network.output.name])
    assert cycles[True] < cycles[False]


def test_a_concat_without_a_whole_row_in_a_half_is_double_buffered_in_channel_chunks():
    """v1.0@227 on the A7-35T's config: fire4's expand output row (55 pixels x 256 channels)
    does not fit half of its 16 KiB ACT_OUT, so the unit is tiled weight chunk outer (each
    chunk's bands hold its own channels) instead of whole: every unit double-buffered, and the
    network from DRAM bit-exact on the reference executor."""
    from fpga.spec.boards import get_board

    config = get_board("arty_a7").config
    network = quant.quantize_network("v1.0", size=227)
    image = network.quantize_input(preprocess(bundled_photos()[0], 227))
    program = compile_network(network, config, split=True)
    assert all(unit.split for unit in program.units), [u.name for u in program.units]
    concat = next(unit for unit in program.units if unit.name == "fire4.concat")
    c, _, w = concat.shape
    assert w * c > config.act_out_bytes // 2 and concat.order == "chunk"
    resident = compile_resident(program, input_size=227)
    check_commands(resident)
    logits, _ = run_resident(resident, resident.initial_dram(), image, EngineEmulator(config))
    np.testing.assert_array_equal(logits, golden.run_network(network, image)[network.output.name])


def test_a_store_is_posted_only_over_light_dram_reads():
    """A STORE is flagged POSTED exactly when the LOADs after it, up to the next STORE, read at
    most POST_READ_SHARE of the bytes it writes: on the A7-100T's 16 x 16 config conv1's band
    STOREs (the gathers after them read an image row per kernel row) are posted, the pools'
    (full-rate LOADs after them) are not; posting them speeds the timeline up."""
    from fpga.compiler.resident import POST_READ_SHARE, _dram_read
    from fpga.spec.boards import get_board
    from fpga.spec.network import shape_network

    config = get_board("arty_a7_100").config
    image = compile_resident(
        compile_network(shape_network("v1.1", 224), config, split=True), input_size=224
    )
    commands = image.commands
    stores = [i for i, rec in enumerate(commands) if int(rec["opcode"]) == Opcode.STORE]
    posted = {}
    for i, end in zip(stores, [*stores[1:], len(commands)], strict=True):
        written = int(commands[i]["count"]) * int(commands[i]["length"])
        read = sum(_dram_read(rec) for rec in commands[i + 1 : end])
        posted[i] = bool(int(commands[i]["flags"]) & Flag.POSTED)
        assert posted[i] == (read <= POST_READ_SHARE * written), i

    def unit_posted(name):
        first, end = image.unit_commands[name]
        return [posted[i] for i in stores if first <= i < end]

    assert sum(unit_posted("conv1")) >= len(unit_posted("conv1")) - 2
    assert not any(unit_posted("pool1"))
    flat = commands.copy()
    flat["flags"] &= ~np.uint16(Flag.POSTED)
    unposted = dataclasses.replace(image, commands=flat)
    assert device_cycles(image)["total"] < device_cycles(unposted)["total"]

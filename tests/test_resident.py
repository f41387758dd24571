"""fpga.resident: command records, the DRAM map, the resident compiler, the reference executor.

Whole v1.0/v1.1 networks (reduced size) run from a bytearray DRAM through the command list and
the engine emulator; logits and every intermediate tensor (read from its DRAM region right after
its unit's last STORE) equal fpga.golden bit for bit, in both weights modes and both input modes.
"""

import numpy as np
import pytest

from fpga import golden, quant
from fpga.compile import compile_network, execute
from fpga.config import DEFAULT_CONFIG
from fpga.emulator import EngineEmulator
from fpga.errors import UserError
from fpga.image import bundled_photos, preprocess
from fpga.layout import BufferSpace
from fpga.resident import (
    COMMAND_BYTES,
    COMMAND_DTYPE,
    Flag,
    Opcode,
    ResidentError,
    check_commands,
    command,
    command_fields,
    compile_resident,
    pack_commands,
    run_commands,
    run_resident,
    sequential_cycles,
    transfer_totals,
    unpack_commands,
)

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

    def run(self, expected_cycles=0):
        return self.engine.run(expected_cycles)


@pytest.mark.parametrize("device_im2col", [True, False], ids=["device-im2col", "host-im2col"])
@pytest.mark.parametrize("weights_mode", ["indices", "huffman"])
@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_network_from_dram_equals_golden(networks, variant, weights_mode, device_im2col):
    network, image = networks(variant)
    program = compile_network(network, DEFAULT_CONFIG, weights_mode=weights_mode)
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

    # the LOADs move the bytes fpga.compile.execute writes, in its order (conv1's gathered
    # columns aside: those are ACT_IN writes of another shape), STOREs read what it reads
    streamed = WriteLog(EngineEmulator(DEFAULT_CONFIG))
    execute(program, streamed, image)
    if device_im2col:
        first = [w for w in streamed.writes if w[0] != BufferSpace.ACT_IN]
        assert first == [w for w in engine.writes if w[0] != BufferSpace.ACT_IN]
    else:
        assert streamed.writes == engine.writes
    assert streamed.reads == engine.reads

    # a second image with the same loaded model (nothing but the input changes)
    other = network.quantize_input(preprocess(bundled_photos()[1], SIZES[variant]))
    logits, _ = run_resident(resident, dram, other, EngineEmulator(DEFAULT_CONFIG))
    expected = golden.run_network(network, other, keep=False)[network.output.name]
    np.testing.assert_array_equal(logits, expected)


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
    in_model = (loads["dram_addr"] >= model[0]) & (loads["dram_addr"] < model[0] + model[1])
    assert model[1] < int(loads["length"][in_model].astype(np.int64).sum())


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


def test_check_commands_refuses_what_the_device_must_not_run(networks):
    network, _ = networks("v1.1")
    program = compile_network(network, DEFAULT_CONFIG)
    resident = compile_resident(program, input_size=64)
    check_commands(resident)
    total = resident.describe()["total"][1]
    loads = np.flatnonzero(resident.commands["opcode"] == Opcode.LOAD)
    stores = np.flatnonzero(resident.commands["opcode"] == Opcode.STORE)

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
    refused(loads[0], "of ACT_IN", buffer_offset=DEFAULT_CONFIG.act_in_bytes)
    refused(len(resident.commands) - 1, "no END", opcode=Opcode.RUN)
    refused(loads[0], "unknown flags 0x2", flags=2)
    refused(stores[0], "unknown flags 0x1 for STORE", flags=Flag.WINDOWS)
    windows = np.flatnonzero(resident.commands["flags"] & Flag.WINDOWS)
    assert len(windows) == 31 * 3 * 3  # v1.1's conv1: per output row, channel, kernel row
    refused(windows[0], "spans 2,001 bytes; the window buffer has 1,024", count=1000)


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

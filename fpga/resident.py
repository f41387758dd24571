"""Device-resident inference, spec side: the sequencer's command records, the DRAM map and the
resident compiler, and a reference executor (issue 12).

In resident mode the model lives in the board's DRAM and the device walks a command list
without the host: per image the host writes the input, starts the program, reads the logits.

**Command record** (:data:`COMMAND_RECORD`, one definition): 32 bytes, little-endian. The host
and the compiler pack it with numpy (:func:`pack_commands`); the gateware
(``hw.sequencer``) derives its ``data.StructLayout`` from :func:`command_fields`.

============== ======================================================================
``opcode``     :class:`Opcode`: LOAD, STORE, RUN, END (0 is invalid: zeroed DRAM is an error,
               never a silent no-op)
``space``      :class:`fpga.layout.BufferSpace` of a LOAD/STORE
``flags``      :class:`Flag`: WINDOWS (a LOAD whose rows overlap in DRAM reads their span once),
               INPUT (a LOAD's ``dram_addr`` is relative to the run's input slot), OUTPUT (a
               STORE's ``dram_addr`` is relative to the run's output slot)
``length``     bytes per row (a row is one contiguous DRAM range)
``dram_addr``  byte address of row 0 in DRAM
``buffer_offset`` byte offset of row 0 in the buffer space
``count``      rows; row r moves ``length`` bytes between ``dram_addr + r * dram_stride`` and
               ``buffer_offset + r * buffer_stride`` (a strided 2-D transfer: a channel-group
               slice of an HWC tensor, or the im2col windows of conv1)
============== ======================================================================

LOAD copies DRAM -> buffer (through the same byte-wide write port the link uses, so
``HUFFMAN_TABLE``/``HUFFMAN_STREAM`` go through the on-chip decoder like link writes), STORE
copies buffer (ACT_OUT, the readable space) -> DRAM, RUN starts the engine on the descriptor
already loaded into DESCRIPTOR and waits for it, END stops and reports cycles. A LOAD/STORE with
``count == 0`` or ``length == 0`` moves nothing.

**DRAM map** (:func:`compile_resident`): ``model`` (every constant blob a run needs —
descriptors, codebooks, weight indices or Huffman tables/streams, parameters — once each,
deduplicated by content), ``program`` (the command records), ``input`` (:data:`SLOTS` image
slots; the host writes one per image), ``output`` (:data:`SLOTS` logits slots),
``activations`` (an arena holding every intermediate tensor in the engine's HWC channel-group
layout, placed by liveness: two tensors share bytes only when their lifetimes do not overlap).
``[0, input end)`` is what a model load writes (every input slot's zero border included); the
rest is the device's scratch.

**Relocation**: the program's input LOADs (flag INPUT) and output STOREs (flag OUTPUT) carry
addresses relative to a slot; each run gets the absolute slot addresses (RUN_RESIDENT's
``input_addr``/``output_addr``, :func:`run_commands`' ``input_base``/``output_base``), so the
host can write image n+1 into one input slot while the device runs image n from the other.
Every other address in the program is absolute.

**Input**: when the compiled program lowers conv1 to a 1x1 conv over host-im2col'ed columns
(v1.0's 7x7/2, v1.1's 3x3/2), ``device_im2col=True`` (the default) keeps the im2col on the
device: an input slot holds the raw image planar (C, H + 2p, W + 2p) with a zero border and
each tile's columns are gathered by strided LOADs (one per output row, input channel and kernel
row: ``count = out_w`` runs of ``k`` bytes ``stride`` apart), so the link carries only the raw
image. ``device_im2col=False`` stores the host's im2col'ed input instead (12x larger for v1.0).

The bytes each LOAD moves are exactly the bytes :func:`fpga.compile.execute` would write for the
same program: the compiler walks the program as ``execute`` does (skipping a constant already in
its buffer by the same rule) and maps every write either to a model blob or to a slice of an
activation tensor's region, every read-back to a STORE into the tensor's region. The test
records an ``execute`` run and checks the LOADs move the same bytes in the same order.

Layering: this module is spec (numpy, ``fpga.layout``/``config``/``golden``/``errors`` only) so
that the gateware (``hw.sequencer``) can import the record; it takes a compiled
``fpga.compile.Program`` as an object and never imports the compiler.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

import numpy as np

from fpga import golden
from fpga.config import AcceleratorConfig
from fpga.errors import UserError
from fpga.layout import (
    BYTE_SPACES,
    CODEBOOK_ENTRIES,
    DESCRIPTOR_BYTES,
    HUFFMAN_HEADER_BYTES,
    HUFFMAN_TABLE_BYTES,
    MAX_TRANSFER_BYTES,
    PARAM_BYTES,
    BufferSpace,
    groups,
    pack_activations,
    transfer_bytes,
    unpack_activations,
    unpack_sums,
)


class Opcode(enum.IntEnum):
    LOAD = 1
    STORE = 2
    RUN = 3
    END = 4


class Flag(enum.IntFlag):
    #: LOAD: the rows overlap in DRAM (conv1's im2col windows); read their whole span
    #: ``(count - 1) * dram_stride + length`` once (at most :data:`WINDOW_BYTES`) and cut the
    #: rows from it on chip. The bytes written are the same as without the flag.
    WINDOWS = 1
    #: LOAD: ``dram_addr`` is relative to the run's input slot (RUN_RESIDENT's ``input_addr``)
    INPUT = 2
    #: STORE: ``dram_addr`` is relative to the run's output slot (RUN_RESIDENT's ``output_addr``)
    OUTPUT = 4


#: input and output slots in the map: the host writes image n+1 into one input slot while the
#: device runs image n from the other, and reads image n's logits from one output slot while
#: image n+1's run writes the other
SLOTS = 2


class HostSpace(enum.IntEnum):
    """Spaces that only the link's own transfers use (``hw.link`` hands the sequencer one LOAD or
    STORE per MEM_READ/MEM_WRITE/MODEL_COMMIT); a program's command naming one is refused. Their
    codes follow the engine's :class:`fpga.layout.BufferSpace` codes."""

    LINK = 8  # the link's frame buffer: STORE from it (MEM_WRITE), LOAD into it (MEM_READ)
    CHECKSUM = 9  # MODEL_COMMIT: a LOAD into it feeds the bytes through a CRC-32


assert min(HostSpace) == max(BufferSpace) + 1


#: the largest span of a WINDOWS LOAD (the sequencer's on-chip window buffer): one padded image
#: row, so images up to ~1000 pixels wide
WINDOW_BYTES = 1024


#: one command, little-endian, in byte order: (field, numpy type). 32 bytes.
COMMAND_RECORD = (
    ("opcode", "u1"),
    ("space", "u1"),
    ("flags", "<u2"),
    ("length", "<u4"),
    ("dram_addr", "<u4"),
    ("buffer_offset", "<u4"),
    ("count", "<u4"),
    ("dram_stride", "<u4"),
    ("buffer_stride", "<u4"),
    ("reserved2", "<u4"),
)
COMMAND_DTYPE = np.dtype(list(COMMAND_RECORD))
COMMAND_BYTES = COMMAND_DTYPE.itemsize
#: DRAM regions start on this boundary (a multiple of every native-port word: 16 B on the Arty)
REGION_ALIGN = 64
#: blobs and tensors inside a region start on a DRAM word
BLOB_ALIGN = 16
#: the largest DRAM the map addresses (byte addresses are 32-bit in the command record)
MAX_DRAM_BYTES = 1 << 32


class ResidentError(UserError, ValueError):
    """A program that does not fit the DRAM (names the region), or a command list the device
    would refuse (names the command)."""


def command_fields() -> list[tuple[str, int]]:
    """The command record as (field, bit width), LSB first (for the gateware's StructLayout)."""
    return [(name, np.dtype(code).itemsize * 8) for name, code in COMMAND_RECORD]


def command(opcode: Opcode, space: int = 0, **fields) -> np.void:
    """One record; unnamed fields are 0 and ``count`` defaults to 1 for LOAD/STORE."""
    rec = np.zeros((), dtype=COMMAND_DTYPE)
    rec["opcode"] = int(opcode)
    rec["space"] = int(space)
    if opcode in (Opcode.LOAD, Opcode.STORE):
        rec["count"] = 1
    for name, value in fields.items():
        rec[name] = value
    return rec


def pack_commands(commands) -> bytes:
    """A sequence of records (from :func:`command`) or a structured array -> bytes."""
    return np.asarray(commands, dtype=COMMAND_DTYPE).tobytes()


def unpack_commands(blob: bytes) -> np.ndarray:
    return np.frombuffer(bytes(blob[: len(blob) // COMMAND_BYTES * COMMAND_BYTES]), COMMAND_DTYPE)


def buffer_sizes(config: AcceleratorConfig) -> dict[BufferSpace, int]:
    """Bytes a LOAD may address per buffer space (HUFFMAN_STREAM: header + 16 bits/symbol)."""
    return {
        BufferSpace.DESCRIPTOR: DESCRIPTOR_BYTES,
        BufferSpace.ACT_IN: config.act_in_bytes,
        BufferSpace.ACT_OUT: config.act_out_bytes,
        BufferSpace.WEIGHT: config.weight_bytes,
        BufferSpace.CODEBOOK: CODEBOOK_ENTRIES,
        BufferSpace.PARAMS: config.max_out_channels * PARAM_BYTES,
        BufferSpace.HUFFMAN_TABLE: HUFFMAN_TABLE_BYTES,
        BufferSpace.HUFFMAN_STREAM: HUFFMAN_HEADER_BYTES + 2 * config.weight_bytes,
    }


def buffer_address_bits(config: AcceleratorConfig) -> int:
    """Bits of a byte address into the largest buffer space (the link's and the sequencer's
    buffer address ports)."""
    return (max(buffer_sizes(config).values()) - 1).bit_length()


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


# -- the image ------------------------------------------------------------------------------------
@dataclass
class ResidentImage:
    """A program placed in DRAM: the map, the model bytes, the command list."""

    program: object  # fpga.compile.Program
    commands: np.ndarray  # COMMAND_DTYPE records, addresses resolved
    regions: dict[str, tuple[int, int]]  # name -> (base, size) bytes
    tensors: dict[str, tuple[int, int]]  # activation tensor -> (base, size), inside "activations"
    model: bytes  # the model region's contents
    input_shape: tuple[int, int, int]  # the int8 image (C, H, W) the host writes
    input_pad: int  # zero border of the planar input (device im2col), else 0
    device_im2col: bool
    dram_size: int
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)  # tensor -> units
    #: unit name -> [first, end) indices of its commands (its tensor is complete at end - 1)
    unit_commands: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def config(self) -> AcceleratorConfig:
        return self.program.config

    @property
    def program_address(self) -> int:
        return self.regions["program"][0]

    def describe(self) -> dict[str, tuple[int, int]]:
        """Region name -> (base, size) in bytes, in address order, plus ``total``."""
        out = dict(sorted(self.regions.items(), key=lambda item: item[1][0]))
        out["total"] = (0, max(base + size for base, size in self.regions.values()))
        return out

    def report(self) -> dict:
        """The map, per-tensor placements and the numbers that matter (JSON-friendly)."""
        return {
            "regions": {k: list(v) for k, v in self.describe().items()},
            "tensors": {k: list(v) for k, v in self.tensors.items()},
            "commands": int(len(self.commands)),
            "load_bytes": self.load_size,
            "link_bytes_per_image": self.link_bytes_per_image(),
            "device_im2col": self.device_im2col,
            "slots": SLOTS,
        }

    @property
    def input_slot_bytes(self) -> int:
        """Bytes per input slot (the input region holds :data:`SLOTS` of them)."""
        return self.regions["input"][1] // SLOTS

    @property
    def output_slot_bytes(self) -> int:
        """Bytes per output slot (the output region holds :data:`SLOTS` of them)."""
        return self.regions["output"][1] // SLOTS

    def input_address(self, slot: int = 0) -> int:
        """Absolute DRAM address of input slot ``slot``."""
        return self.regions["input"][0] + _slot(slot) * self.input_slot_bytes

    def output_address(self, slot: int = 0) -> int:
        """Absolute DRAM address of output slot ``slot``."""
        return self.regions["output"][0] + _slot(slot) * self.output_slot_bytes

    @property
    def load_size(self) -> int:
        """Bytes a model load writes: ``[0, end of the input region)`` (every input slot)."""
        base, size = self.regions["input"]
        return base + size

    @property
    def commit_size(self) -> int:
        """Bytes MODEL_COMMIT covers with its CRC: ``[0, start of the input region)`` (model and
        program; the input region is rewritten whole by every image)."""
        return self.regions["input"][0]

    def fingerprint(self) -> str:
        """16 hex digits naming what a model load puts in DRAM and the map the host uses with it
        (the device reports it after MODEL_COMMIT; the host skips the load when it matches)."""
        digest = hashlib.sha256(self.load_bytes()[: self.commit_size])
        digest.update(repr(sorted(self.regions.items())).encode())
        return digest.hexdigest()[:16]

    def load_bytes(self) -> bytes:
        """What a model load writes at DRAM address 0: model, program, zeroed input slots."""
        blob = bytearray(self.load_size)
        base, size = self.regions["model"]
        blob[base : base + len(self.model)] = self.model
        base, _ = self.regions["program"]
        program = pack_commands(self.commands)
        blob[base : base + len(program)] = program
        return bytes(blob)

    def initial_dram(self, size: int | None = None) -> bytearray:
        """A DRAM of ``size`` bytes (default: the map's total) after a model load."""
        total = self.describe()["total"][1]
        dram = bytearray(size if size is not None else total)
        load = self.load_bytes()
        dram[: len(load)] = load
        return dram

    def input_bytes(self) -> int:
        """Bytes the host writes per image (:meth:`input_blob`; one slot's image)."""
        if self.device_im2col:
            c, h, w = self.input_shape
            return c * (h + 2 * self.input_pad) * (w + 2 * self.input_pad)
        return _tensor_bytes(self.program.input_shape, self.config.rows)

    def _output_tensor_bytes(self) -> int:
        unit = next(u for u in self.program.units if u.name == self.program.output)
        return _tensor_bytes(unit.shape, self.config.rows)

    def output_bytes(self) -> int:
        """Bytes the host reads per image (the logits: int32 per class)."""
        unit = self.program.units[-1]
        if unit.op == "avgpool":
            return 4 * unit.shape[0]
        return self._output_tensor_bytes()

    def link_bytes_per_image(self) -> int:
        """Payload bytes over the link per image in resident mode: input + logits."""
        return self.input_bytes() + self.output_bytes()

    def input_blob(self, image: np.ndarray) -> bytes:
        """What the host writes per image at an input slot's base: the int8 image (C, H, W)
        planar with its zero border (device im2col), or host-im2col'ed in the ACT layout."""
        image = np.asarray(image)
        if image.shape != self.input_shape or image.dtype != np.int8:
            raise ValueError(
                f"input must be int8 {self.input_shape}, not {image.dtype} {image.shape}"
            )
        if self.device_im2col:
            c, h, w = self.input_shape
            p = self.input_pad
            planar = np.zeros((c, h + 2 * p, w + 2 * p), dtype=np.int8)
            planar[:, p : p + h, p : p + w] = image
            return planar.tobytes()
        return pack_activations(_prepare_input(self.program, image), self.config.rows)

    def write_input(self, dram: bytearray, image: np.ndarray, slot: int = 0) -> None:
        """What the host does per image: :meth:`input_blob` into input slot ``slot``."""
        blob = self.input_blob(image)
        base = self.input_address(slot)
        dram[base : base + len(blob)] = blob

    def read_tensor(self, dram: bytes, name: str, slot: int = 0) -> np.ndarray:
        """An activation tensor from its DRAM region (the output from output slot ``slot``), as
        golden shapes it."""
        if name == self.program.output:
            base, size = self.output_address(slot), self._output_tensor_bytes()
        else:
            base, size = self.tensors[name]
        return self._decode(name, bytes(dram[base : base + size]))

    def read_output(self, dram: bytes, slot: int = 0) -> np.ndarray:
        return self.read_tensor(dram, self.program.output, slot)

    def decode_output(self, blob: bytes) -> np.ndarray:
        """The output from the first :meth:`output_bytes` bytes of an output slot (what the host
        reads back per image)."""
        return self._decode(self.program.output, bytes(blob))

    def _decode(self, name: str, blob: bytes) -> np.ndarray:
        unit = next(u for u in self.program.units if u.name == name)
        if unit.op == "avgpool":
            return unpack_sums(blob, unit.shape[0])
        c, h, w = unit.shape
        return unpack_activations(blob, c, h, w, self.config.rows)


def relocation(flags: int, input_base: int, output_base: int) -> int:
    """What a command with ``flags`` adds to its ``dram_addr``: the run's input slot (INPUT),
    its output slot (OUTPUT), else 0 (as ``hw.sequencer`` does before anything else)."""
    if flags & Flag.INPUT:
        return input_base
    if flags & Flag.OUTPUT:
        return output_base
    return 0


def _slot(slot: int) -> int:
    if slot not in range(SLOTS):
        raise ValueError(f"slot {slot} is outside range({SLOTS})")
    return slot


# -- the compiler ---------------------------------------------------------------------------------
def _tensor_bytes(shape, lanes: int) -> int:
    if len(shape) == 1:
        return 4 * groups(shape[0], lanes) * lanes
    c, h, w = shape
    return h * w * groups(c, lanes) * lanes


def _allocate(sizes: dict[str, int], lifetimes: dict[str, tuple[int, int]]) -> tuple[dict, int]:
    """Greedy first fit by offset: tensors overlap in bytes only if not in time."""
    placed: dict[str, tuple[int, int]] = {}
    for name in sorted(sizes, key=lambda n: (lifetimes[n][0], -sizes[n])):
        first, last = lifetimes[name]
        size = _align(sizes[name], BLOB_ALIGN)
        busy = sorted(
            (base, base + _align(sizes[other], BLOB_ALIGN))
            for other, (base, _) in placed.items()
            if not (lifetimes[other][1] < first or last < lifetimes[other][0])
        )
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed[name] = (offset, sizes[name])
    total = max((base + _align(size, BLOB_ALIGN) for base, size in placed.values()), default=0)
    return placed, total


def compile_resident(
    program,
    dram_size: int = 256 << 20,
    device_im2col: bool = True,
    input_size: int | None = None,
) -> ResidentImage:
    """Place ``program`` (from :func:`fpga.compile.compile_network`, compressed weights and
    weights mode already chosen there) in a DRAM of ``dram_size`` bytes.

    ``input_size``: the image side the host sends (``network.input_size``); needed only for a
    lowered conv1, whose floor-mode output side fits several input sides (default: the
    smallest).

    Raises :class:`ResidentError` (a :class:`fpga.errors.UserError`) naming the region that
    does not fit.
    """
    config = program.config
    lanes = config.rows
    if program.lowered_conv1:
        kernel, stride, pad = program.conv1_lowering
        side = _raw_side(program, input_size)
        image_shape = (program.input_shape[0] // kernel**2, side, side)
    else:
        pad = 0
        image_shape = tuple(program.input_shape)
    im2col = device_im2col and program.lowered_conv1

    # lifetimes (unit index produced -> last unit index reading it) and sizes
    index = {"input": -1}
    last_use: dict[str, int] = {}
    for i, unit in enumerate(program.units):
        index[unit.name] = i
        for tile in unit.tiles:
            for load in tile.loads:
                last_use[load.tensor] = max(last_use.get(load.tensor, -1), i)
    shapes = {unit.name: unit.shape for unit in program.units}
    intermediates = {
        u.name: _tensor_bytes(u.shape, lanes) for u in program.units if u.name != program.output
    }
    lifetimes = {n: (index[n], last_use.get(n, index[n])) for n in intermediates}
    tensors, arena_size = _allocate(intermediates, lifetimes)

    # walk the program as execute() does; addresses are (region, offset) until the map is laid
    blobs: dict[bytes, int] = {}
    model = bytearray()
    proto: list[tuple[np.void, str | None]] = []  # record, region of dram_addr (offset inside)

    def blob_offset(data: bytes) -> int:
        if data not in blobs:
            model.extend(bytes(_align(len(model), BLOB_ALIGN) - len(model)))
            blobs[data] = len(model)
            model.extend(data)
        return blobs[data]

    def tensor_rows(name: str):
        """(region, base offset in region, bytes per pixel row unit) of a tensor."""
        if name == "input":
            return "input", 0
        if name == program.output:
            return "output", 0
        return "activations", tensors[name][0]

    # what fpga.compile.execute's _CountingDevice holds: constants already in a buffer are
    # not loaded again (tests/test_resident.py checks the LOADs equal execute's writes)
    held: dict[tuple[int, int], bytes] = {}

    def write(space: BufferSpace, offset: int, data: bytes, constant: bool) -> bool:
        nonlocal held
        if constant:
            if held.get((int(space), offset)) == data:
                return False
            held[(int(space), offset)] = data
        else:
            held = {k: v for k, v in held.items() if k[0] != space}
        if space == BufferSpace.HUFFMAN_TABLE:
            held = {k: v for k, v in held.items() if k[0] != BufferSpace.HUFFMAN_STREAM}
        return True

    unit_commands = {}
    for unit in program.units:
        first_command = len(proto)
        for tile in unit.tiles:
            for load in tile.loads:
                offset = load.base * lanes
                write(BufferSpace.ACT_IN, offset, b"", constant=False)
                if load.tensor == "input" and im2col:
                    proto += _gather_conv1(program, load, offset, image_shape, pad)
                    continue
                shape = program.input_shape if load.tensor == "input" else shapes[load.tensor]
                c, h, w = shape
                g = groups(c, lanes)
                region, base = tensor_rows(load.tensor)
                width = (load.g1 - load.g0) * lanes
                start = base + (load.y0 * w * g + load.g0) * lanes
                rows = (load.y1 - load.y0) * w
                if load.g0 == 0 and load.g1 == g:  # whole pixels: one contiguous range
                    rec = command(
                        Opcode.LOAD,
                        BufferSpace.ACT_IN,
                        length=rows * width,
                        dram_addr=start,
                        buffer_offset=offset,
                    )
                else:
                    rec = command(
                        Opcode.LOAD,
                        BufferSpace.ACT_IN,
                        length=width,
                        count=rows,
                        dram_addr=start,
                        dram_stride=g * lanes,
                        buffer_offset=offset,
                        buffer_stride=width,
                    )
                proto.append((rec, region))
            for run in tile.runs:
                consts = [*run.consts, (BufferSpace.DESCRIPTOR, 0, run.descriptor.pack())]
                for space, offset, data in consts:
                    if write(BufferSpace(space), offset, data, constant=True):
                        rec = command(
                            Opcode.LOAD,
                            space,
                            length=len(data),
                            dram_addr=blob_offset(data),
                            buffer_offset=offset,
                        )
                        proto.append((rec, "model"))
                proto.append((command(Opcode.RUN), None))
            store = tile.store
            region, base = tensor_rows(unit.name)
            channels = (store.g1 - store.g0) * lanes
            space, offset = BufferSpace.ACT_OUT, 0
            if store.kind == "sums":
                rec = command(
                    Opcode.STORE,
                    space,
                    length=4 * channels,
                    buffer_offset=offset,
                    dram_addr=base + 4 * store.g0 * lanes,
                )
            else:
                c, h, w = unit.shape
                g = groups(c, lanes)
                start = base + (store.y0 * w * g + store.g0) * lanes
                rows = (store.y1 - store.y0) * store.width
                if store.g0 == 0 and store.g1 == g:
                    rec = command(
                        Opcode.STORE,
                        space,
                        length=rows * channels,
                        dram_addr=start,
                        buffer_offset=offset,
                    )
                else:
                    rec = command(
                        Opcode.STORE,
                        space,
                        length=channels,
                        count=rows,
                        dram_addr=start,
                        dram_stride=g * lanes,
                        buffer_offset=offset,
                        buffer_stride=channels,
                    )
            proto.append((rec, region))
        unit_commands[unit.name] = (first_command, len(proto))
    proto.append((command(Opcode.END), None))

    # the map
    if im2col:
        c, h, w = image_shape
        input_size = c * (h + 2 * pad) * (w + 2 * pad)
    else:
        input_size = _tensor_bytes(program.input_shape, lanes)
    output_size = _tensor_bytes(shapes[program.output], lanes)
    sizes = {
        "model": len(model),
        "program": len(proto) * COMMAND_BYTES,
        "input": SLOTS * _align(input_size, REGION_ALIGN),
        "output": SLOTS * _align(output_size, REGION_ALIGN),
        "activations": arena_size,
    }
    regions, address = {}, 0
    for name, region_size in sizes.items():
        regions[name] = (address, region_size)
        address = _align(address + region_size, REGION_ALIGN)
        if regions[name][0] + region_size > min(dram_size, MAX_DRAM_BYTES):
            raise ResidentError(
                f"the {name} region ({region_size:,} bytes at {regions[name][0]:,}) ends beyond "
                f"the {dram_size:,}-byte DRAM; use a board with more memory or a smaller input"
            )
    # the input and output are relocated per run (slot-relative, flagged); the rest is absolute
    relocated = {"input": (Opcode.LOAD, Flag.INPUT), "output": (Opcode.STORE, Flag.OUTPUT)}
    commands = np.zeros(len(proto), dtype=COMMAND_DTYPE)
    for i, (rec, region) in enumerate(proto):
        if region in relocated:
            opcode, flag = relocated[region]
            assert int(rec["opcode"]) == opcode, (region, int(rec["opcode"]))
            rec["flags"] = int(rec["flags"]) | flag
        elif region is not None:
            rec["dram_addr"] = int(rec["dram_addr"]) + regions[region][0]
        commands[i] = rec
    arena = regions["activations"][0]
    placed = {name: (arena + base, size) for name, (base, size) in tensors.items()}
    return ResidentImage(
        program,
        commands,
        regions,
        placed,
        bytes(model),
        image_shape,
        pad if im2col else 0,
        bool(im2col),
        dram_size,
        lifetimes,
        unit_commands,
    )


def _prepare_input(program, image: np.ndarray) -> np.ndarray:
    """``fpga.compile.prepare_input``: the host's im2col of a lowered conv1."""
    if not program.lowered_conv1:
        return image
    kernel, stride, pad = program.conv1_lowering
    side = golden.conv_output_size(image.shape[1], kernel, stride, pad)
    return golden.im2col(image, kernel, stride, pad).reshape(-1, side, side)


def _raw_side(program, input_size: int | None) -> int:
    """The image side the host sends: ``input_size``, checked against the lowered conv1."""
    kernel, stride, pad = program.conv1_lowering
    out = program.input_shape[1]
    side = (out - 1) * stride + kernel - 2 * pad if input_size is None else input_size
    if golden.conv_output_size(side, kernel, stride, pad) != out:
        raise ResidentError(
            f"an input of {side}x{side} does not give conv1's {out}x{out} output; pass the "
            "network's input size"
        )
    return side


def _gather_conv1(program, load, offset: int, image_shape, pad: int) -> list:
    """The im2col of conv1 for output rows [y0, y1) as strided LOADs from the planar input.

    Lowered channel ``(c * k + ky) * k + kx`` of output pixel (oy, ox) is padded-image byte
    ``(c, oy * s + ky, ox * s + kx)``: for fixed (oy, c, ky) the k bytes of each pixel are
    contiguous in DRAM and pixels are ``s`` bytes apart; in ACT_IN they are ``G * lanes`` apart.
    The windows overlap (k > s): flagged WINDOWS, the sequencer reads the padded row once.
    ``dram_addr`` is relative to the input slot (the caller flags the records INPUT).
    """
    lanes = program.config.rows
    kernel, stride, _ = program.conv1_lowering
    c_raw, h, w = image_shape
    wp, hp = w + 2 * pad, h + 2 * pad
    _, _, out_w = program.input_shape
    g = groups(program.input_shape[0], lanes)
    span = (out_w - 1) * stride + kernel
    proto = []
    for oy in range(load.y0, load.y1):
        for c in range(c_raw):
            for ky in range(kernel):
                rec = command(
                    Opcode.LOAD,
                    BufferSpace.ACT_IN,
                    flags=Flag.WINDOWS if span <= WINDOW_BYTES else 0,
                    length=kernel,
                    count=out_w,
                    dram_addr=(c * hp + oy * stride + ky) * wp,
                    dram_stride=stride,
                    buffer_offset=offset
                    + ((oy - load.y0) * out_w * g) * lanes
                    + (c * kernel + ky) * kernel,
                    buffer_stride=g * lanes,
                )
                proto.append((rec, "input"))
    return proto


# -- accounting ----------------------------------------------------------------------------------
#: cycles of ``hw.sequencer`` measured in its Amaranth simulation with a 20-cycle DRAM read
#: latency (tests/hw/test_sequencer.py::test_transfer_costs): fetch + decode of one command, per
#: chunk loaded / stored over the buffer ports (:func:`row_chunks`), per DMA transfer beyond its
#: chunks; a WINDOWS LOAD: per window cut (check, next) and per byte of the span read once
SEQUENCER_COSTS = {
    "command": 24,
    "load_chunk": 1.0,
    "store_chunk": 1.0,  # a read a cycle; finished words go out while the next is read
    "row": 23,  # a LOAD row's DMA request + read latency
    "store_row": 8,  # a STORE row's request, the pipeline's fill, the drain
    "window": 1,  # a window's next row starts as its last chunk goes
    "span_byte": 1 / 16,
}
#: the DRAM word the estimates assume (the Arty A7's 128-bit native port)
ESTIMATE_WORD_BYTES = MAX_TRANSFER_BYTES


def row_chunks(buffer_at, dram_at, length, width: int, word_bytes: int):
    """Buffer-port cycles (chunks) the sequencer spends on rows of ``length`` bytes at buffer
    byte ``buffer_at`` and DRAM byte ``dram_at`` in a space written ``width`` bytes at a time
    (1 for :data:`fpga.layout.BYTE_SPACES`): a chunk ends at every multiple of ``width`` in the
    buffer and of ``word_bytes`` in DRAM. Works on numpy arrays of rows."""
    buffer_at, dram_at = np.asarray(buffer_at, np.int64), np.asarray(dram_at, np.int64)
    if length <= 0:
        return np.zeros_like(buffer_at)

    def crossings(start, step):  # multiples of step strictly inside (start, start + length)
        return (start + length - 1) // step - start // step

    in_buffer, in_dram = crossings(buffer_at, width), crossings(dram_at, word_bytes)
    shared = np.where((buffer_at - dram_at) % width == 0, in_dram, 0)  # width | word_bytes
    return 1 + in_buffer + in_dram - shared


def transfer_totals(
    image: ResidentImage, word_bytes: int = ESTIMATE_WORD_BYTES, commands=None
) -> dict[str, int]:
    """What the command list (or ``commands``, a slice of it) moves, counted statically: bytes
    loaded per source region, bytes stored, buffer-port chunks (``load_chunks``/
    ``store_chunks``), DMA transfers (``rows``), WINDOWS rows and spans, commands, runs, and
    the engine's predicted cycles. INPUT-flagged LOADs count as ``loaded_input``; chunks of
    relocated rows are counted at slot 0 (slots are :data:`REGION_ALIGN`-aligned, so every
    slot gives the same counts)."""
    commands = image.commands if commands is None else commands
    width = min(transfer_bytes(image.config), word_bytes)
    totals = {"commands": len(commands), "runs": 0, "rows": 0, "store_rows": 0, "stored": 0}
    totals.update({"windows": 0, "window_span": 0})  # WINDOWS LOADs: rows cut, bytes read
    totals.update({"load_chunks": 0, "store_chunks": 0})
    totals.update({f"loaded_{name}": 0 for name in image.regions})
    bases = sorted((base, name) for name, (base, _) in image.regions.items())
    slot_bases = (image.input_address(0), image.output_address(0))
    for rec in commands:
        op, rows = int(rec["opcode"]), int(rec["count"]) if int(rec["length"]) else 0
        if op == Opcode.RUN:
            totals["runs"] += 1
        elif op in (Opcode.LOAD, Opcode.STORE):
            length = int(rec["length"])
            moved = rows * length
            flags = int(rec["flags"])
            first = int(rec["dram_addr"]) + relocation(flags, *slot_bases)
            if rows and flags & Flag.WINDOWS:
                totals["rows"] += 1  # one DMA transfer of the span
                totals["windows"] += rows
                totals["window_span"] += (rows - 1) * int(rec["dram_stride"]) + length
            else:
                totals["rows"] += rows
            space = int(rec["space"])
            wide = space not in BYTE_SPACES if op == Opcode.LOAD else space == BufferSpace.ACT_OUT
            r = np.arange(rows, dtype=np.int64)
            chunks = row_chunks(
                int(rec["buffer_offset"]) + r * int(rec["buffer_stride"]),
                first + r * int(rec["dram_stride"]),
                length,
                width if wide else 1,
                word_bytes,
            )
            if op == Opcode.STORE:
                totals["store_rows"] += rows
                totals["stored"] += moved
                totals["store_chunks"] += int(chunks.sum())
            else:
                if flags & Flag.INPUT:
                    region = "input"
                else:
                    region = [name for base, name in bases if base <= first][-1]
                totals[f"loaded_{region}"] += moved
                totals["load_chunks"] += int(chunks.sum())
    totals["loaded"] = sum(totals[f"loaded_{name}"] for name in image.regions)
    totals["engine_cycles"] = sum(image.program.predicted_cycles().values())
    return totals


def transfer_cycles(totals: dict, costs: dict = SEQUENCER_COSTS) -> float:
    """The sequencer's cycles for what :func:`transfer_totals` counted (fetches, chunks, DMA
    transfers, windows), at the measured per-item ``costs``."""
    t = totals
    return (
        t["commands"] * costs["command"]
        + t["load_chunks"] * costs["load_chunk"]
        + t["store_chunks"] * costs["store_chunk"]
        + (t["rows"] - t["store_rows"]) * costs["row"]
        + t["store_rows"] * costs["store_row"]
        + t["windows"] * costs["window"]
        + t["window_span"] * costs["span_byte"]
    )


def sequential_cycles(image: ResidentImage, costs: dict = SEQUENCER_COSTS) -> dict[str, int]:
    """Device cycles of one inference on the sequential ``hw.sequencer`` (no overlap of DMA and
    engine), estimated from :func:`transfer_totals` and the measured per-item ``costs``."""
    t = transfer_totals(image)
    transfer = transfer_cycles(t, costs)
    return {
        "engine": t["engine_cycles"],
        "transfer": int(transfer),
        "total": int(transfer) + t["engine_cycles"],
    }


# -- validation ---------------------------------------------------------------------------------
def check_commands(image: ResidentImage, dram_size: int | None = None, commands=None) -> None:
    """Refuse a command list the device must not run: unknown opcode or space, unknown flags
    (WINDOWS and INPUT only on a LOAD, OUTPUT only on a STORE), a flagged row outside
    ``[0, slot bytes)`` of its slot, a LOAD/STORE row outside ``[0, dram_size)`` (relocated
    rows: in the last slot) or an unflagged one outside every region of the map, an unflagged
    row in the input or output region (every run relocates those), a STORE into the model or
    program, a buffer range beyond its space, no END. Raises :class:`ResidentError` naming the
    command."""
    dram_size = image.dram_size if dram_size is None else dram_size
    commands = image.commands if commands is None else commands
    sizes = buffer_sizes(image.config)
    writable = ("activations",)
    allowed = {Opcode.LOAD: Flag.WINDOWS | Flag.INPUT, Opcode.STORE: Flag.OUTPUT}
    slots = {
        Flag.INPUT: ("input", image.input_slot_bytes, image.input_address(SLOTS - 1)),
        Flag.OUTPUT: ("output", image.output_slot_bytes, image.output_address(SLOTS - 1)),
    }
    for i, rec in enumerate(commands):
        op = int(rec["opcode"])
        where = f"command {i}"
        if op not in set(Opcode):
            raise ResidentError(f"{where}: unknown opcode {op}")
        op = Opcode(op)
        if op == Opcode.END:
            return
        if op == Opcode.RUN:
            continue
        count, length = int(rec["count"]), int(rec["length"])
        flags = int(rec["flags"])
        if flags & ~int(allowed[op]):
            raise ResidentError(f"{where}: unknown flags {flags:#x} for {op.name}")
        if count == 0 or length == 0:
            continue
        span = (count - 1) * int(rec["dram_stride"]) + length
        if flags & Flag.WINDOWS and span > WINDOW_BYTES:
            raise ResidentError(
                f"{where}: a WINDOWS LOAD spans {span:,} bytes; the window buffer has "
                f"{WINDOW_BYTES:,}"
            )
        if int(rec["space"]) not in set(BufferSpace):
            raise ResidentError(f"{where}: unknown buffer space {int(rec['space'])}")
        space = BufferSpace(int(rec["space"]))
        if op == Opcode.STORE and space != BufferSpace.ACT_OUT:
            raise ResidentError(f"{where}: STORE from {space.name}; only ACT_OUT reads back")
        buffer_end = int(rec["buffer_offset"]) + (count - 1) * int(rec["buffer_stride"]) + length
        if buffer_end > sizes[space]:
            raise ResidentError(
                f"{where}: {op.name} reaches byte {buffer_end:,} of {space.name} "
                f"({sizes[space]:,} bytes)"
            )
        first = int(rec["dram_addr"])
        end = first + (count - 1) * int(rec["dram_stride"]) + length
        slot = next((slots[f] for f in slots if flags & f), None)
        if slot is not None:
            kind, slot_bytes, last_slot = slot
            if end > slot_bytes:
                raise ResidentError(
                    f"{where}: {op.name} addresses [{first:,}, {end:,}) of the {kind} slot "
                    f"({slot_bytes:,} bytes)"
                )
            first, end = first + last_slot, end + last_slot  # the highest slot a run may use
        if end > dram_size:
            raise ResidentError(
                f"{where}: {op.name} addresses DRAM [{first:,}, {end:,}), beyond the "
                f"{dram_size:,}-byte DRAM"
            )
        if slot is not None:
            continue
        for name, flag, kind in (("input", "INPUT", "LOAD"), ("output", "OUTPUT", "STORE")):
            base, size = image.regions[name]
            if first < base + size and base < end:
                raise ResidentError(
                    f"{where}: {op.name} at an absolute address in the {name} region; every "
                    f"run relocates it to its {name} slot (a {flag}-flagged, slot-relative "
                    f"{kind})"
                )
        inside = [
            name
            for name, (base, size) in image.regions.items()
            if base <= first and end <= base + size
        ]
        if not inside:
            raise ResidentError(
                f"{where}: {op.name} addresses DRAM [{first:,}, {end:,}), outside every region"
            )
        if op == Opcode.STORE and inside[0] not in writable:
            raise ResidentError(f"{where}: STORE into the {inside[0]} region")
    raise ResidentError("the command list has no END")


# -- the reference executor -------------------------------------------------------------------
@dataclass
class ResidentStats:
    engine_cycles: int = 0
    commands: int = 0
    loaded_bytes: int = 0
    stored_bytes: int = 0
    dma_requests: int = 0  # DMA transfers: one per LOAD/STORE row, one per WINDOWS LOAD


def run_commands(
    dram: bytearray,
    engine,
    pc: int,
    dram_size: int | None = None,
    after=None,
    input_base: int = 0,
    output_base: int = 0,
) -> ResidentStats:
    """Interpret the command records at DRAM byte ``pc`` until END, as the sequencer does:
    fetch from DRAM, LOAD/STORE through ``engine.write``/``engine.read`` (an
    :class:`fpga.emulator.EngineEmulator` or any object with those and ``run``).

    A command flagged INPUT addresses DRAM at ``input_base + dram_addr + r * dram_stride``,
    one flagged OUTPUT at ``output_base + ...`` (the run's slots: the base is added before
    anything else).

    Raises :class:`ResidentError` (like the sequencer's error codes) on an unknown opcode or a
    DRAM address (relocated) outside ``[0, dram_size)``. ``after(index, record)`` is called
    after each command (index counts from the first one executed)."""
    dram_size = len(dram) if dram_size is None else dram_size
    stats = ResidentStats()
    while True:
        if pc < 0 or pc + COMMAND_BYTES > dram_size:
            raise ResidentError(f"command fetch at {pc:,} is outside the {dram_size:,}-byte DRAM")
        rec = np.frombuffer(bytes(dram[pc : pc + COMMAND_BYTES]), COMMAND_DTYPE)[0]
        stats.commands += 1
        op = int(rec["opcode"])
        if op == Opcode.END:
            return stats
        if op == Opcode.RUN:
            stats.engine_cycles += engine.run()
        elif op in (Opcode.LOAD, Opcode.STORE):
            length = int(rec["length"])
            addr, offset = int(rec["dram_addr"]), int(rec["buffer_offset"])
            flags = int(rec["flags"])
            addr += relocation(flags, input_base, output_base)
            windows = op == Opcode.LOAD and flags & Flag.WINDOWS
            for row in range(int(rec["count"]) if length else 0):
                if addr + length > dram_size:
                    raise ResidentError(
                        f"command at {pc:,}: DRAM [{addr:,}, {addr + length:,}) is outside the "
                        f"{dram_size:,}-byte DRAM"
                    )
                stats.dma_requests += not windows or row == 0
                if op == Opcode.LOAD:
                    engine.write(int(rec["space"]), offset, bytes(dram[addr : addr + length]))
                    stats.loaded_bytes += length
                else:
                    dram[addr : addr + length] = engine.read(int(rec["space"]), offset, length)
                    stats.stored_bytes += length
                addr += int(rec["dram_stride"])
                offset += int(rec["buffer_stride"])
        else:
            raise ResidentError(f"command at {pc:,}: unknown opcode {op}")
        if after is not None:
            after(stats.commands - 1, rec)
        pc += COMMAND_BYTES


def run_resident(
    image: ResidentImage,
    dram: bytearray,
    input_int8: np.ndarray,
    engine,
    after=None,
    slot: int = 0,
):
    """One inference in resident mode: write the input into input slot ``slot``, run the
    program from DRAM with that slot's input and output addresses, read output slot ``slot``.
    ``dram`` must hold :meth:`ResidentImage.load_bytes` at 0 (a model load); ``engine``:
    ``fpga.emulator.EngineEmulator(image.config)`` (passed in: this module is spec and does not
    import the emulator), or anything with its ``write``/``read``/``run``.

    Returns ``(output, stats)``: int32 (classes,) sums for SqueezeNet, and
    :class:`ResidentStats`."""
    image.write_input(dram, input_int8, slot)
    stats = run_commands(
        dram,
        engine,
        image.program_address,
        after=after,
        input_base=image.input_address(slot),
        output_base=image.output_address(slot),
    )
    return image.read_output(dram, slot), stats


__all__ = [
    "COMMAND_BYTES",
    "COMMAND_DTYPE",
    "COMMAND_RECORD",
    "Opcode",
    "Flag",
    "HostSpace",
    "ResidentError",
    "SLOTS",
    "WINDOW_BYTES",
    "ResidentImage",
    "ResidentStats",
    "buffer_address_bits",
    "buffer_sizes",
    "check_commands",
    "command",
    "command_fields",
    "compile_resident",
    "pack_commands",
    "run_commands",
    "run_resident",
    "sequential_cycles",
    "transfer_cycles",
    "transfer_totals",
    "unpack_commands",
]

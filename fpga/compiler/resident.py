"""The resident compiler: a tiled :class:`~fpga.compiler.program.Program` placed in DRAM.

**DRAM map** (:func:`compile_resident`): ``model`` (every constant blob a run needs —
descriptors, codebooks, weight indices or Huffman tables/streams, parameters — once each,
deduplicated by content), ``program`` (the command records, :mod:`fpga.spec.commands`),
``input`` (:data:`~fpga.spec.commands.SLOTS` image slots; the host writes one per image),
``output`` (as many logits slots), ``activations`` (an arena holding every intermediate tensor
in the engine's HWC channel-group layout, placed by liveness: two tensors share bytes only when
their lifetimes do not overlap). ``[0, input end)`` is what a model load writes (every input
slot's zero border included); the rest is the device's scratch.

**Input**: when the compiled program lowers conv1 to a 1x1 conv over host-im2col'ed columns
(v1.0's 7x7/2, v1.1's 3x3/2), ``device_im2col=True`` (the default) keeps the im2col on the
device: an input slot holds the raw image planar (C, H + 2p, W + 2p) with a zero border and
each tile's columns are gathered by strided LOADs (one per output row, input channel and kernel
row: ``count = out_w`` runs of ``k`` bytes ``stride`` apart), so the link carries only the raw
image. ``device_im2col=False`` stores the host's im2col'ed input instead (12x larger for v1.0).

The bytes each LOAD moves are exactly the bytes :func:`fpga.compiler.program.execute` would write
for the same program: the compiler walks the program as ``execute`` does (skipping a constant
already in its buffer by the one rule, :class:`fpga.compiler.program.BufferContents`) and maps
every write either to a model blob or to a slice of an activation tensor's region, every read-back
to a STORE into the tensor's region. The test records an ``execute`` run and checks the LOADs
move the same bytes in the same order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fpga.compiler.program import BufferContents, Program, prepare_input
from fpga.spec import golden
from fpga.spec.commands import (
    COMMAND_BYTES,
    COMMAND_DTYPE,
    MAX_DRAM_BYTES,
    SLOTS,
    WINDOW_BYTES,
    Flag,
    Opcode,
    ResidentError,
    check_slot,
    command,
    pack_commands,
)
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    BufferSpace,
    groups,
    pack_activations,
    unpack_activations,
    unpack_sums,
)

#: DRAM regions start on this boundary (a multiple of every native-port word: 16 B on the Arty)
REGION_ALIGN = 64
#: blobs and tensors inside a region start on a DRAM word
BLOB_ALIGN = 16


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


# -- the image ------------------------------------------------------------------------------------
@dataclass
class ResidentImage:
    """A program placed in DRAM: the map, the model bytes, the command list."""

    program: Program
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
        return self.regions["input"][0] + check_slot(slot) * self.input_slot_bytes

    def output_address(self, slot: int = 0) -> int:
        """Absolute DRAM address of output slot ``slot``."""
        return self.regions["output"][0] + check_slot(slot) * self.output_slot_bytes

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
        return pack_activations(prepare_input(self.program, image), self.config.rows)

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
    """Place ``program`` (from :func:`fpga.compiler.program.compile_network`, compressed weights and
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

    held = BufferContents()  # as execute's: a constant already in its buffer is not loaded again

    unit_commands = {}
    for unit in program.units:
        first_command = len(proto)
        for tile in unit.tiles:
            for load in tile.loads:
                offset = load.base * lanes
                held.write(BufferSpace.ACT_IN, offset, b"", constant=False)
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
                    if held.write(BufferSpace(space), offset, data, constant=True):
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

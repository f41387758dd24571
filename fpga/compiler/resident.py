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
device: an input slot holds the raw image HWC (H + 2p, W + 2p, C) with a zero border and
each tile's columns are gathered by strided LOADs (one per output row and kernel row: ``count =
out_w`` runs of ``k * C`` bytes ``stride * C`` apart), so the link carries only the raw image.
``device_im2col=False`` stores the host's im2col'ed input instead (12x larger for v1.0).

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
    HALF_SPACES,
    MAX_DRAM_BYTES,
    SLOTS,
    WINDOW_BYTES,
    Flag,
    Opcode,
    ResidentError,
    check_slot,
    command,
    dram_span,
    half_bytes,
    pack_commands,
    run_claims,
    touches,
)
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    HUFFMAN_HEADER,
    HUFFMAN_HEADER_BYTES,
    BufferSpace,
    decode_huffman_stream,
    groups,
    huffman_stream_header,
    huffman_table_lengths,
    pack_activations,
    pack_huffman_stream,
    predict_cycles,
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
    input_pad: int  # zero border of the HWC input (device im2col), else 0
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
            return (h + 2 * self.input_pad) * (w + 2 * self.input_pad) * c
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
        HWC with its zero border (device im2col), or host-im2col'ed in the ACT layout."""
        image = np.asarray(image)
        if image.shape != self.input_shape or image.dtype != np.int8:
            raise ValueError(
                f"input must be int8 {self.input_shape}, not {image.dtype} {image.shape}"
            )
        if self.device_im2col:
            c, h, w = self.input_shape
            p = self.input_pad
            hwc = np.zeros((h + 2 * p, w + 2 * p, c), dtype=np.int8)
            hwc[p : p + h, p : p + w] = image.transpose(1, 2, 0)
            return hwc.tobytes()
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
    program: Program,
    dram_size: int = 256 << 20,
    device_im2col: bool = True,
    input_size: int | None = None,
) -> ResidentImage:
    """Place ``program`` (from :func:`fpga.compiler.program.compile_network`, compressed weights
    and weights mode already chosen there) in a DRAM of ``dram_size`` bytes.

    ``input_size``: the image side the host sends (``network.input_size``); needed only for a
    lowered conv1, whose floor-mode output side fits several input sides (default: the
    smallest).

    Raises :class:`ResidentError` (a :class:`fpga.spec.errors.UserError`) naming the region that
    does not fit.
    """
    lanes = program.config.rows
    if program.lowered_conv1:
        kernel, _, pad = program.conv1_lowering
        side = _raw_side(program, input_size)
        image_shape = (program.input_shape[0] // kernel**2, side, side)
    else:
        pad = 0
        image_shape = tuple(program.input_shape)
    im2col = device_im2col and program.lowered_conv1
    lifetimes = _lifetimes(program)
    intermediates = {
        u.name: _tensor_bytes(u.shape, lanes) for u in program.units if u.name != program.output
    }
    tensors, arena_size = _allocate(intermediates, lifetimes)
    writer = _CommandWriter(program, tensors, image_shape, pad, im2col)
    proto, unit_commands = writer.walk()
    _post_stores(proto)

    if im2col:
        c, h, w = image_shape
        input_bytes = c * (h + 2 * pad) * (w + 2 * pad)
    else:
        input_bytes = _tensor_bytes(program.input_shape, lanes)
    output = next(u for u in program.units if u.name == program.output)
    sizes = {
        "model": len(writer.model),
        "program": len(proto) * COMMAND_BYTES,
        "input": SLOTS * _align(input_bytes, REGION_ALIGN),
        "output": SLOTS * _align(_tensor_bytes(output.shape, lanes), REGION_ALIGN),
        "activations": arena_size,
    }
    regions = _lay_out(sizes, dram_size)
    arena = regions["activations"][0]
    return ResidentImage(
        program,
        _resolve(proto, regions),
        regions,
        {name: (arena + base, size) for name, (base, size) in tensors.items()},
        bytes(writer.model),
        image_shape,
        pad if im2col else 0,
        bool(im2col),
        dram_size,
        lifetimes,
        unit_commands,
    )


#: a STORE is posted (``Flag.POSTED``) when the LOADs after it, up to the next STORE, read at
#: most this share of the bytes it writes: conv1's gathers read an image row once per kernel row
#: and output row (a few KB) while its STORE writes the band (on 16 x 16: 14 KB under 4 KB of
#: reads); a STORE posted under full-rate LOADs measured slower on the simulated board (DDR3
#: turns the bus around between reads and writes: v1.1 on 8 x 8 1.025x -> 1.042x)
POST_READ_SHARE = 0.5


def _post_stores(proto: list) -> None:
    """Flag POSTED the STOREs of ``proto`` (``(record, region)`` pairs) that the LOADs after them
    hardly meet in DRAM (:data:`POST_READ_SHARE`)."""
    stores = [i for i, (rec, _) in enumerate(proto) if int(rec["opcode"]) == Opcode.STORE]
    for i, end in zip(stores, [*stores[1:], len(proto)], strict=True):
        rec = proto[i][0]
        written = int(rec["count"]) * int(rec["length"])
        read = sum(_dram_read(load) for load, _ in proto[i + 1 : end])
        if written and read <= POST_READ_SHARE * written:
            rec["flags"] = int(rec["flags"]) | Flag.POSTED


def _dram_read(rec) -> int:
    """The DRAM bytes a LOAD reads (a WINDOWS LOAD its span once); 0 for any other command."""
    if int(rec["opcode"]) != Opcode.LOAD:
        return 0
    if int(rec["flags"]) & Flag.WINDOWS:
        return dram_span(rec)
    return int(rec["count"]) * int(rec["length"])


def _lifetimes(program: Program) -> dict[str, tuple[int, int]]:
    """Every intermediate tensor's (index of the unit producing it, last unit reading it)."""
    index, last_use = {"input": -1}, {}
    for i, unit in enumerate(program.units):
        index[unit.name] = i
        for tile in unit.tiles:
            for load in tile.loads:
                last_use[load.tensor] = max(last_use.get(load.tensor, -1), i)
    names = [u.name for u in program.units if u.name != program.output]
    return {n: (index[n], last_use.get(n, index[n])) for n in names}


def _pixel_rows(op: Opcode, start: int, pixels: int, width: int, pitch: int, offset: int):
    """The command moving ``width`` bytes of each of ``pixels`` consecutive pixels of an HWC
    tensor whose pixels are ``pitch`` bytes apart in DRAM, from DRAM byte ``start`` (LOAD into
    ACT_IN, STORE from ACT_OUT, at buffer byte ``offset``, the pixels packed): whole pixels
    (``width == pitch``) are one contiguous range, a slice of channel groups one strided row a
    pixel."""
    space = BufferSpace.ACT_IN if op == Opcode.LOAD else BufferSpace.ACT_OUT
    if width == pitch:
        return command(op, space, length=pixels * width, dram_addr=start, buffer_offset=offset)
    return command(
        op,
        space,
        length=width,
        count=pixels,
        dram_addr=start,
        dram_stride=pitch,
        buffer_offset=offset,
        buffer_stride=width,
    )


def _slab(op: Opcode, start: int, rows: int, cols: int, width: int, pitch: int, w: int, offset):
    """The commands moving ``width`` bytes of each pixel of a block of ``rows`` x ``cols``
    pixels of an HWC tensor ``w`` pixels wide (pixels ``pitch`` bytes apart in DRAM) between
    DRAM byte ``start`` and the buffer from byte ``offset``, packed: whole rows are consecutive
    pixels (:func:`_pixel_rows`); every channel of some columns is one strided command of a row
    an image row; else :func:`_pixel_rows` an image row."""
    if cols == w:
        return [_pixel_rows(op, start, rows * cols, width, pitch, offset)]
    if width == pitch:
        return [
            command(
                op,
                BufferSpace.ACT_IN if op == Opcode.LOAD else BufferSpace.ACT_OUT,
                length=cols * width,
                count=rows,
                dram_addr=start,
                dram_stride=w * pitch,
                buffer_offset=offset,
                buffer_stride=cols * width,
            )
        ]
    return [
        _pixel_rows(op, start + r * w * pitch, cols, width, pitch, offset + r * cols * width)
        for r in range(rows)
    ]


class _CommandWriter:
    """Walks the program as :func:`fpga.compiler.program.execute` does and writes its commands:
    ``(record, region of its dram_addr or None)`` with addresses inside the region, and the model
    region's bytes (each constant blob once)."""

    def __init__(self, program: Program, tensors: dict, image_shape, pad: int, im2col: bool):
        self.program, self.tensors = program, tensors
        self.image_shape, self.pad, self.im2col = image_shape, pad, im2col
        self.lanes = program.config.rows
        self.shapes = {unit.name: unit.shape for unit in program.units}
        self.model = bytearray()
        self.blobs: dict[bytes, int] = {}
        self.held = BufferContents()  # as execute's: a constant already held is not loaded
        # double buffering (a split program): the halves of the tile under way and of the last
        # run's weights and parameters, what the last SPLIT run owns until a WAIT, the last
        # tile's STORE (emitted once the next tile's run has started)
        self.split = False  # the unit under way's (Unit.split)
        self.halves = {space: 0 for space in HALF_SPACES}
        self.owned: dict[int, range] | None = None
        self.proto: list = []
        # weight prefetch (split units): every run in order, the next one's index, and the
        # pieces of a later run's constants still to go after the coming RUNs
        self.runs = [(u, run) for u in program.units for tile in u.tiles for run in tile.runs]
        self.run_index = 0
        self.queue: list[list] = []

    def walk(self) -> tuple[list, dict[str, tuple[int, int]]]:
        """The program's commands in order. Split: tile t's LOADs go into the halves tile t-1's
        run does not own, its RUN (SPLIT) starts once run t-1 has ended (one engine), then tile
        t-1's STORE reads its results from the other ACT_OUT half while run t computes; a WAIT
        comes only before a command that touches what the run under way owns (the STORE a
        following LOAD depends on, the last STORE)."""
        unit_commands, starts = {}, {}
        pending = None  # split: (unit, STORE, the unit's last) of the last tile, not yet emitted
        for unit in self.program.units:
            self.unit = unit  # its loads and stores see the tensors as it does (Unit.spatial)
            starts[unit.name] = len(self.proto)
            for index, tile in enumerate(unit.tiles):
                last = index == len(unit.tiles) - 1
                self.split = unit.split
                if self.split:
                    half = 1 - self.halves[BufferSpace.ACT_IN]
                    self.halves[BufferSpace.ACT_IN] = self.halves[BufferSpace.ACT_OUT] = half
                loads = [rec for load in tile.loads for rec in self._load(load)]
                *early, first = self._run(tile.runs[0])  # its constants' LOADs, its RUN
                if pending is not None and any(
                    _overlap(rec, stored) for rec in loads for stored in pending[1]
                ):
                    # the STORE waits for the run under way; the next run's constants go into
                    # the halves that run does not own before it, under that run
                    self._emit(early)
                    early = []
                    self._store_done(pending, starts, unit_commands)  # its bytes are needed
                    pending = None
                if pending is not None and not self.split:  # its run overwrites all ACT_OUT
                    self._store_done(pending, starts, unit_commands)
                    pending = None
                self._emit(loads)
                # the tile before's STORE goes after the RUN that starts this tile's longest
                # run: each RUN waits for the run under way, so a STORE after a short run would
                # hold up the next RUN while it moves its bytes
                cycles = [predict_cycles(run.descriptor, self.program.config) for run in tile.runs]
                longest = cycles.index(max(cycles))
                for number, run in enumerate(tile.runs):
                    self._emit([*early, first] if number == 0 else self._run(run))
                    self._prefetch()
                    if number == longest and pending is not None:
                        self._store_done(pending, starts, unit_commands)
                        pending = None
                pending = (unit, self._store(unit, tile.store), last)
                if not self.split:
                    self._store_done(pending, starts, unit_commands)
                    pending = None
        if pending is not None:
            self._store_done(pending, starts, unit_commands)
        self._emit([(command(Opcode.END), None)])
        return self.proto, unit_commands

    def _store_done(self, pending: tuple, starts: dict, unit_commands: dict) -> None:
        """Emit a tile's STORE; after its unit's last, the unit's commands end."""
        unit, stores, last = pending
        self._emit(stores)
        if last:
            unit_commands[unit.name] = (starts[unit.name], len(self.proto))

    def _emit(self, records: list) -> None:
        """Append ``(record, region)`` pairs, a WAIT before one that touches what the run under
        way owns (:func:`fpga.spec.commands.run_claims`)."""
        for rec, region in records:
            op = int(rec["opcode"])
            if op in (Opcode.LOAD, Opcode.STORE) and self.owned is not None:
                space, offset = int(rec["space"]), int(rec["buffer_offset"])
                length, count = int(rec["length"]), int(rec["count"])
                if space == BufferSpace.HUFFMAN_STREAM:  # its decoded bytes go into WEIGHT
                    header = self.model[int(rec["dram_addr"]) :][:HUFFMAN_HEADER_BYTES]
                    space, offset, length, count = BufferSpace.WEIGHT, *_stream_dest(header), 1
                if touches(self.owned, space, offset, length, count, int(rec["buffer_stride"])):
                    self.proto.append((command(Opcode.WAIT), None))
                    self.owned = None
            if op == Opcode.RUN:
                flags = int(rec["flags"])
                self.owned = run_claims(flags, self.program.config) if flags & Flag.SPLIT else None
            self.proto.append((rec, region))

    def _blob(self, data: bytes) -> int:
        if data not in self.blobs:
            self.model.extend(bytes(_align(len(self.model), BLOB_ALIGN) - len(self.model)))
            self.blobs[data] = len(self.model)
            self.model.extend(data)
        return self.blobs[data]

    def _tensor(self, name: str) -> tuple[str, int]:
        """(region, base offset in it) of a tensor."""
        if name == "input":
            return "input", 0
        if name == self.program.output:
            return "output", 0
        return "activations", self.tensors[name][0]

    def _half(self, space: BufferSpace) -> int:
        """Byte offset of the half the tile or run under way uses in ``space`` (0 unsplit)."""
        if not self.split:
            return 0
        return self.halves[space] * half_bytes(space, self.program.config)

    def _load(self, load) -> list:
        lanes = self.lanes
        offset = load.base * lanes + self._half(BufferSpace.ACT_IN)
        self.held.write(BufferSpace.ACT_IN, offset, b"", constant=False)
        if load.tensor == "input" and self.im2col:
            width = self.unit.spatial(self.program.input_shape)[2]
            return _gather_conv1(self.program, load, offset, self.image_shape, self.pad, width)
        shape = self.program.input_shape if load.tensor == "input" else self.shapes[load.tensor]
        c, _, w = self.unit.spatial(shape)
        g = groups(c, lanes)
        region, base = self._tensor(load.tensor)
        x0, x1 = load.columns(w)
        start = base + ((load.y0 * w + x0) * g + load.g0) * lanes
        width, rows = (load.g1 - load.g0) * lanes, load.y1 - load.y0
        records = _slab(Opcode.LOAD, start, rows, x1 - x0, width, g * lanes, w, offset)
        return [(rec, region) for rec in records]

    def _run(self, run) -> list:
        consts = [*run.consts, (BufferSpace.DESCRIPTOR, 0, run.descriptor.pack())]
        flags = 0
        if self.split:
            consts = self.held.needed(self._place_consts(consts))
            flags = Flag.SPLIT | sum(
                (HALF_SPACES[space] for space in HALF_SPACES if self.halves[space]), Flag(0)
            )
        proto = []
        for space, offset, data in consts:
            if self.held.write(BufferSpace(space), offset, data, True, run.consts):
                rec = command(
                    Opcode.LOAD,
                    space,
                    length=len(data),
                    dram_addr=self._blob(data),
                    buffer_offset=offset,
                )
                proto.append((rec, "model"))
        return [*proto, (command(Opcode.RUN, flags=int(flags)), None)]

    def _prefetch(self) -> None:
        """After a SPLIT RUN: the constants of the next run that needs others (the next weight
        chunk) go into the halves this run does not own, cut into as many pieces as there are
        RUNs before that one (a weight chunk's index bytes in slices, its Huffman stream in
        sub-streams, each decoding to its own place; each in proportion to its run's cycles), one
        piece after each RUN, so that the
        loads and the Huffman decoding spread over the runs instead of waiting in front of the
        run that needs them. That run then finds them held (:class:`BufferContents`)."""
        index, self.run_index = self.run_index, self.run_index + 1
        if self.queue:
            self._emit(self.queue.pop(0))
            return
        unit, run = self.runs[index]
        if not unit.split:
            return
        key = _weight_key(run)
        later = index + 1
        while later < len(self.runs) and _weight_key(self.runs[later][1]) == key:
            later += 1
        if later - index < 2 or later == len(self.runs) or not self.runs[later][0].split:
            return
        config = self.program.config
        shares = [predict_cycles(run.descriptor, config) for _, run in self.runs[index:later]]
        pieces = self._pieces(self.runs[later][1].consts, shares)
        self._emit(pieces[0])
        self.queue = pieces[1:]

    def _pieces(self, consts: list, shares: list[int]) -> list[list]:
        """``consts`` placed in the halves the run under way does not own, as a list of LOAD
        records per run before the one that needs them (the codebook, a Huffman table and the
        parameters in the first; WEIGHT bytes or a Huffman stream cut in proportion to the runs'
        ``shares``, their cycles: a short run takes a short piece), and noted as held there."""
        config = self.program.config
        base = {
            home: (1 - self.halves[home]) * half_bytes(home, config)
            for home in (BufferSpace.WEIGHT, BufferSpace.PARAMS)
        }
        pieces: list[list] = [[] for _ in shares]
        table = next((d for s, _, d in consts if s == BufferSpace.HUFFMAN_TABLE), None)
        for space, offset, data in consts:
            if space == BufferSpace.WEIGHT:
                for k, a, b in _cuts(len(data), shares, BLOB_ALIGN):
                    pieces[k].append((space, offset + base[space] + a, data[a:b]))
                self.held.write(space, offset + base[space], data, constant=True)
            elif space == BufferSpace.HUFFMAN_STREAM:
                dest, symbols = decode_huffman_stream(table, data)
                lengths = huffman_table_lengths(table)
                start = dest + base[BufferSpace.WEIGHT]
                for k, a, b in _cuts(len(symbols), shares, 1):
                    stream = pack_huffman_stream(symbols[a:b], lengths, start + a)
                    pieces[k].append((space, offset, stream))
                self.held.write(
                    space, offset, _in_half((space, offset, data), start - dest)[2], True
                )
            else:
                moved = offset + base.get(BufferSpace(space), 0)
                pieces[0].append((space, moved, data))
                self.held.write(space, moved, data, constant=True)
        return [
            [
                (
                    command(
                        Opcode.LOAD,
                        space,
                        length=len(data),
                        dram_addr=self._blob(data),
                        buffer_offset=offset,
                    ),
                    "model",
                )  # fmt: skip
                for space, offset, data in piece
            ]
            for piece in pieces
        ]

    def _place_consts(self, consts: list) -> list:
        """A split run's constants in the halves it will use: WEIGHT (a Huffman stream decodes
        into it: its header's destination moves) and PARAMS each in the half that already holds
        them, else in the half the run under way does not own (the other one than the last
        run's). Sets :attr:`halves` for the run's flags."""
        config = self.program.config
        placed = {space: [] for space in (BufferSpace.WEIGHT, BufferSpace.PARAMS)}
        target = {BufferSpace.HUFFMAN_STREAM: BufferSpace.WEIGHT}
        for space, offset, data in consts:
            home = target.get(BufferSpace(space), BufferSpace(space))
            if home in placed:
                placed[home].append((space, offset, data))
        for home, items in placed.items():
            if not items:
                continue
            half = half_bytes(home, config)
            options = [[_in_half(item, k * half) for item in items] for k in (0, 1)]
            held = [k for k in (0, 1) if all(self.held.holds(item, consts) for item in options[k])]
            self.halves[home] = held[0] if held else 1 - self.halves[home]
        out = []
        for space, offset, data in consts:
            home = target.get(BufferSpace(space), BufferSpace(space))
            if home in placed:
                item = _in_half((space, offset, data), self.halves[home] * half_bytes(home, config))
                out.append(item)
            else:
                out.append((space, offset, data))
        return out

    def _store(self, unit, store) -> list:
        lanes = self.lanes
        region, base = self._tensor(unit.name)
        channels = (store.g1 - store.g0) * lanes
        if store.kind == "sums":
            rec = command(
                Opcode.STORE,
                BufferSpace.ACT_OUT,
                length=4 * channels,
                buffer_offset=self._half(BufferSpace.ACT_OUT),
                dram_addr=base + 4 * store.g0 * lanes,
            )
            return [(rec, region)]
        c, _, w = unit.spatial(unit.shape)
        g = groups(c, lanes)
        start = base + ((store.y0 * w + store.x0) * g + store.g0) * lanes
        rows, offset = store.y1 - store.y0, self._half(BufferSpace.ACT_OUT)
        records = _slab(Opcode.STORE, start, rows, store.width, channels, g * lanes, w, offset)
        return [(rec, region) for rec in records]


def _in_half(const: tuple, base: int) -> tuple:
    """A constant write ``(space, offset, data)`` moved ``base`` bytes up its buffer (a Huffman
    stream: the destination in its header, where its decoded bytes go)."""
    space, offset, data = const
    if space == BufferSpace.HUFFMAN_STREAM:
        count, dest = huffman_stream_header(data)
        return space, offset, HUFFMAN_HEADER.pack(count, dest + base) + data[HUFFMAN_HEADER_BYTES:]
    return space, offset + base, data


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether two ``(record, region)`` pairs' DRAM spans (first row's first byte to the last
    row's last) meet: a LOAD that must come after a STORE."""
    spans = []
    for rec, region in (a, b):
        first = int(rec["dram_addr"])
        end = first + (int(rec["count"]) - 1) * int(rec["dram_stride"]) + int(rec["length"])
        spans.append((region, first, end))
    (ra, fa, ea), (rb, fb, eb) = spans
    return ra == rb and fa < eb and fb < ea


def _weight_key(run) -> tuple:
    """What a run needs held besides its descriptor (its weight chunk's constants)."""
    return tuple((int(space), offset, data) for space, offset, data in run.consts)


def _cuts(total: int, shares: list[int], align: int) -> list[tuple[int, int, int]]:
    """``[0, total)`` in consecutive pieces ``(k, a, b)`` in proportion to ``shares`` (piece
    ``k`` to ``shares[k]``), cut at multiples of ``align``; empty pieces left out."""
    whole, cuts, done = sum(shares) or 1, [], 0
    for k, share in enumerate(shares):
        end = total if k == len(shares) - 1 else min(total, done + share * total // whole)
        end = total if end >= total else end // align * align
        if end > done:
            cuts.append((k, done, end))
            done = end
    return cuts


def _stream_dest(stream: bytes) -> tuple[int, int]:
    """(WEIGHT offset, bytes) a Huffman stream decodes into (its header)."""
    count, dest = huffman_stream_header(stream)
    return dest, count


def _lay_out(sizes: dict[str, int], dram_size: int) -> dict[str, tuple[int, int]]:
    """The regions in order, each on a :data:`REGION_ALIGN` boundary; one that ends beyond the
    DRAM is a :class:`ResidentError`."""
    regions, address = {}, 0
    for name, region_size in sizes.items():
        regions[name] = (address, region_size)
        address = _align(address + region_size, REGION_ALIGN)
        if regions[name][0] + region_size > min(dram_size, MAX_DRAM_BYTES):
            raise ResidentError(
                f"the {name} region ({region_size:,} bytes at {regions[name][0]:,}) ends beyond "
                f"the {dram_size:,}-byte DRAM; use a board with more memory or a smaller input"
            )
    return regions


def _resolve(proto: list, regions: dict[str, tuple[int, int]]) -> np.ndarray:
    """The command records with their addresses resolved: the input and output relocated per
    run (slot-relative, flagged INPUT/OUTPUT), every other region's made absolute."""
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
    return commands


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


def _gather_conv1(program, load, offset: int, image_shape, pad: int, width: int) -> list:
    """The im2col of conv1 for output rows [y0, y1) of ``width`` pixels (conv1's unit may see its
    output as shorter rows than the image's, ``Unit.view``: then a row is pieces of the image's
    rows) as strided LOADs from the HWC input.

    Lowered channel ``(ky * k + kx) * C + c`` of output pixel (oy, ox)
    (:func:`fpga.compiler.program.lower_conv1`) is padded-image byte ``(oy * s + ky, ox * s + kx,
    c)``: for fixed (oy, ky) the k * C bytes of each pixel are contiguous in DRAM and pixels are
    ``s * C`` bytes apart; in ACT_IN they are ``G * lanes`` apart.
    The windows overlap (k > s): flagged WINDOWS, the sequencer reads the padded row once.
    ``dram_addr`` is relative to the input slot (the caller flags the records INPUT).
    """
    lanes = program.config.rows
    kernel, stride, _ = program.conv1_lowering
    c_raw, _, w = image_shape
    wp = w + 2 * pad
    _, _, out_w = program.input_shape
    g = groups(program.input_shape[0], lanes)
    proto = []
    first, end = load.y0 * width, load.y1 * width  # the tile's pixels
    for oy in range(first // out_w, (end - 1) // out_w + 1):
        x0 = max(first - oy * out_w, 0)  # this image row's pixels in the tile
        x1 = min(end - oy * out_w, out_w)
        pixel = oy * out_w + x0 - first  # the first one's place in the tile
        run = kernel * c_raw  # a pixel's bytes for one kernel row
        span = ((x1 - x0 - 1) * stride + kernel) * c_raw
        for ky in range(kernel):
            rec = command(
                Opcode.LOAD,
                BufferSpace.ACT_IN,
                flags=Flag.WINDOWS if span <= WINDOW_BYTES else 0,
                length=run,
                count=x1 - x0,
                dram_addr=((oy * stride + ky) * wp + x0 * stride) * c_raw,
                dram_stride=stride * c_raw,
                buffer_offset=offset + (pixel * g) * lanes + ky * run,
                buffer_stride=g * lanes,
            )
            proto.append((rec, "input"))
    return proto

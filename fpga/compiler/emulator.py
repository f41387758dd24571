"""A fast functional model of the conv engine's buffers and runs (NumPy, via fpga.spec.golden).

It interprets the same byte layouts and descriptors as ``hw.engine.engine`` and reports the cycles
of ``fpga.spec.layout.predict_cycles``. Uses: testing the compiler's tiling quickly, the link fuzz's
device model, and recording the expected read-backs that the RTL bench replays. It is checked
against the RTL in ``tests/sim`` (every read the RTL returns must equal the emulator's).
"""

from __future__ import annotations

import numpy as np

from fpga.spec import golden
from fpga.spec.commands import HALF_SPACES, Flag, half_bytes
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    CODEBOOK_ENTRIES,
    DESCRIPTOR_BYTES,
    HUFFMAN_HEADER_BYTES,
    HUFFMAN_TABLE_BYTES,
    PARAM_BYTES,
    BufferSpace,
    LayerDescriptor,
    Op,
    decode_huffman_stream,
    huffman_stream_header,
    predict_cycles,
    tile_bytes,
)


class EngineEmulator:
    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.buffers = {
            BufferSpace.DESCRIPTOR: bytearray(DESCRIPTOR_BYTES),
            BufferSpace.ACT_IN: bytearray(config.act_in_bytes),
            BufferSpace.ACT_OUT: bytearray(config.act_out_bytes),
            BufferSpace.WEIGHT: bytearray(config.weight_bytes),
            BufferSpace.CODEBOOK: bytearray(CODEBOOK_ENTRIES),
            BufferSpace.PARAMS: bytearray(config.max_out_channels * PARAM_BYTES),
            BufferSpace.HUFFMAN_TABLE: bytearray(HUFFMAN_TABLE_BYTES),
        }
        self.total_cycles = 0
        self._stream: bytearray | None = None  # a Huffman chunk being received

    @property
    def pending_stream(self) -> tuple[int, int] | None:
        """(WEIGHT offset, bytes) the Huffman chunk being received decodes into, or None."""
        if self._stream is None or len(self._stream) < HUFFMAN_HEADER_BYTES:
            return None
        count, dest = huffman_stream_header(self._stream)
        return dest, count

    def flush(self) -> None:
        """Decode a received Huffman chunk now (else at the next access)."""
        self._decode_stream()

    def _decode_stream(self) -> None:
        """Decode the received Huffman chunk into WEIGHT (the RTL does it as bytes arrive)."""
        if self._stream is None:
            return
        stream, self._stream = bytes(self._stream), None
        dest, data = decode_huffman_stream(self.buffers[BufferSpace.HUFFMAN_TABLE], stream)
        self.write(BufferSpace.WEIGHT, dest, data)

    def write(self, space, offset: int, data: bytes) -> None:
        if BufferSpace(space) == BufferSpace.HUFFMAN_STREAM:
            if offset == 0:
                self._stream = bytearray()
            if self._stream is None or offset != len(self._stream):
                raise ValueError("Huffman stream bytes out of order")
            self._stream += data
            return
        self._decode_stream()
        buf = self.buffers[BufferSpace(space)]
        if offset < 0 or offset + len(data) > len(buf):
            raise ValueError(f"write of {len(data)} bytes at {offset} overflows {space!r}")
        if BufferSpace(space) == BufferSpace.WEIGHT:
            # like the RTL: each index is decoded through the codebook as it is written, and
            # the buffer holds int8 weights
            codebook = np.frombuffer(bytes(self.buffers[BufferSpace.CODEBOOK]), dtype=np.uint8)
            data = codebook[np.frombuffer(bytes(data), dtype=np.uint8)].tobytes()
        buf[offset : offset + len(data)] = data

    def read(self, space, offset: int, length: int) -> bytes:
        self._decode_stream()
        if BufferSpace(space) != BufferSpace.ACT_OUT:
            return bytes(length)  # like the RTL: only ACT_OUT reads back
        return bytes(self.buffers[BufferSpace.ACT_OUT][offset : offset + length])

    # -- runs ----------------------------------------------------------------------------------
    def _words(self, space, start: int, count: int) -> np.ndarray:
        lanes = self.config.rows
        buf = self.buffers[space]
        size = len(buf) // lanes
        index = (start + np.arange(count)) % size  # the RTL's addresses wrap too
        words = np.frombuffer(bytes(buf), dtype=np.int8).reshape(size, lanes)
        return words[index]

    def _input(self, d: LayerDescriptor, base: int) -> np.ndarray:
        lanes = self.config.rows
        words = self._words(BufferSpace.ACT_IN, base, d.in_h * d.in_w * d.in_groups)
        return words.reshape(d.in_h, d.in_w, d.in_groups * lanes).transpose(2, 0, 1)

    def _store(self, d: LayerDescriptor, y: np.ndarray, group_offset: int) -> None:
        """Write (blocks*lanes, H, W) at ``group_offset`` of ``d.out_groups`` per pixel."""
        lanes = self.config.rows
        out = self.buffers[BufferSpace.ACT_OUT]
        c, h, w = y.shape
        view = np.frombuffer(out, dtype=np.int8)
        size = len(out) // lanes
        pixels = np.arange(h * w)
        for g in range(c // lanes):
            words = (pixels * d.out_groups + group_offset + g) % size
            block = y[g * lanes : (g + 1) * lanes].reshape(lanes, -1).T
            idx = (words[:, None] * lanes + np.arange(lanes)[None, :]).ravel()
            view_w = np.ndarray(view.shape, dtype=np.int8, buffer=out)
            view_w[idx] = block.ravel()

    def run(self, expected_cycles: int = 0, flags: int = 0) -> int:
        """One run of the descriptor in DESCRIPTOR; ``flags``: the RUN command's
        (``fpga.spec.commands``): a SPLIT run's accesses to a space with its HIGH_* flag land in
        the upper half (``run_address``: the top address bit flipped, which for a power-of-two
        buffer is the buffer rotated by half), and a SPLIT run whose tile leaves the half
        (``fpga.spec.layout.tile_bytes``) raises ValueError, as the engine flags ``error``."""
        self._decode_stream()
        d = LayerDescriptor.unpack(self.buffers[BufferSpace.DESCRIPTOR])
        if not flags & Flag.SPLIT:
            return self._run(d)
        need = tile_bytes(d, self.config)
        for space in HALF_SPACES:
            extent = need[space.name.lower()]
            if extent > half_bytes(space, self.config):
                raise ValueError(
                    f"a SPLIT run's {space.name} reaches byte {extent:,}, beyond its half "
                    f"({half_bytes(space, self.config):,} bytes)"
                )
        high = [space for space, flag in HALF_SPACES.items() if flags & flag]
        for space in high:
            self._swap_halves(space)
        try:
            return self._run(d)
        finally:
            for space in high:
                self._swap_halves(space)

    def _swap_halves(self, space: BufferSpace) -> None:
        buf, half = self.buffers[space], half_bytes(space, self.config)
        buf[:] = buf[half:] + buf[:half]

    def _run(self, d: LayerDescriptor) -> int:
        lanes = self.config.rows
        if d.op == Op.CONV:
            x = self._input(d, d.in_base)
            k, s = d.kernel, d.stride
            pb = max(0, (d.out_h - 1) * s + k - d.pad_top - d.in_h)
            pr = max(0, (d.out_w - 1) * s + k - d.pad_left - d.in_w)
            xp = np.pad(x, ((0, 0), (d.pad_top, pb), (d.pad_left, pr)))
            n_words = d.blocks * k * k * d.in_groups
            weight = np.frombuffer(bytes(self.buffers[BufferSpace.WEIGHT]), dtype=np.int8)
            weight = weight[: n_words * lanes * lanes]
            weight = weight.reshape(d.blocks, k, k, d.in_groups, lanes, lanes)
            weight = weight.transpose(0, 5, 3, 4, 1, 2)
            weight = weight.reshape(d.blocks * lanes, d.in_groups * lanes, k, k)
            params = np.frombuffer(
                bytes(self.buffers[BufferSpace.PARAMS][: d.blocks * lanes * PARAM_BYTES]),
                dtype=[("bias", "<i4"), ("mult", "<u2"), ("shift", "u1"), ("pad", "u1")],
            )
            y = golden.conv2d(
                np.ascontiguousarray(xp),
                np.ascontiguousarray(weight),
                params["bias"].astype(np.int32),
                params["mult"].astype(np.int64),
                (params["shift"] & 63).astype(np.int64),
                s,
                0,
                d.relu,
            )[:, : d.out_h, : d.out_w]
            self._store(d, y, d.out_group_offset)
        elif d.op == Op.MAXPOOL:
            x = self._input(d, d.in_base)
            y = golden.maxpool(np.ascontiguousarray(x))[:, : d.out_h, : d.out_w]
            self._store(d, y, 0)
        elif d.op == Op.ADD:
            n = d.out_h * d.out_w * d.in_groups
            a = self._words(BufferSpace.ACT_IN, 0, n)
            b = self._words(BufferSpace.ACT_IN, d.b_base, n)
            y = golden.add(a, b, d.mult_a, d.mult_b, d.add_shift & 63, d.relu)
            view = np.ndarray(
                (len(self.buffers[BufferSpace.ACT_OUT]),),
                np.int8,
                buffer=self.buffers[BufferSpace.ACT_OUT],
            )
            view[: n * lanes] = y.ravel()
        elif d.op == Op.AVGPOOL:
            x = self._input(d, 0)
            sums = x.astype(np.int32).sum(axis=(1, 2), dtype=np.int32)
            blob = sums.astype("<i4").tobytes()
            self.buffers[BufferSpace.ACT_OUT][: len(blob)] = blob
        else:
            raise ValueError(f"unknown op {d.op}")
        cycles = predict_cycles(d, self.config)
        self.total_cycles += cycles
        return cycles

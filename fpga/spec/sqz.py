"""The ``.sqz`` compressed-model file format (documented in docs/format.md).

No pickle, no code: a fixed header, a JSON graph section and one binary section per conv layer,
every section with its own CRC-32. The reader validates every size against the bytes actually
present and against hard limits before allocating, and reports any problem as one
:class:`FormatError` naming the section.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from fpga.spec import huffman
from fpga.spec.errors import UserError
from fpga.spec.files import atomic_write
from fpga.spec.golden import MAX_SHIFT
from fpga.spec.graph import (
    IMAGE_KERNELS,
    MAX_CHANNELS,
    GraphError,
    check_accumulator,
    check_graph,
    check_network,
    graph_json,
)
from fpga.spec.network import QLayer, QuantizedNetwork

MAGIC = b"SQZMODEL"
VERSION = 1
HEADER = struct.Struct("<8sHHQI")  # magic, version, flags, total length, sections
HEADER_CRC = struct.Struct("<I")
SECTION_HEAD = struct.Struct("<4sHI")  # tag, name length, payload length
CONV_HEAD = struct.Struct("<IIBBBHIII")  # c_out, c_in, k, bits, coding, codebook, stored, idx, gap
MAX_SECTIONS = 256
MAX_WEIGHTS_PER_LAYER = 8 * 1024 * 1024
#: all conv layers together (v1.0 has 1.2 M weights): bounds what the reader allocates
MAX_WEIGHTS_TOTAL = 32 * 1024 * 1024
#: the graph JSON (v1.0's is about 9 kB)
MAX_GRAPH_BYTES = 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
CODING_FIXED, CODING_HUFFMAN = 0, 1
GAP_BITS = 4  # relative position field, as in Deep Compression's SqueezeNet file
MAX_GAP = (1 << GAP_BITS) - 1


class FormatError(UserError, ValueError):
    """A ``.sqz`` file that cannot be read; the message names the section and the problem."""


# -- sparse positions (relative indexing, as Deep Compression) -------------------------------------
def sparse_streams(indices: np.ndarray, max_gap: int = MAX_GAP) -> tuple[np.ndarray, np.ndarray]:
    """Flattened indices -> (stored index stream, gap stream) with filler entries.

    Each stored entry is preceded by ``gap`` skipped zeros (0..max_gap); a longer run of zeros
    is bridged by filler entries storing index 0 after ``max_gap`` skipped zeros.
    """
    flat = np.asarray(indices, dtype=np.int64).ravel()
    positions = np.flatnonzero(flat)
    # vectorised: number of fillers before each nonzero = (distance - 1) // (max_gap + 1)
    distance = np.diff(np.concatenate([[-1], positions]))
    fillers = (distance - 1) // (max_gap + 1)
    gap = (distance - 1) % (max_gap + 1)
    count = len(positions) + int(fillers.sum())
    stored = np.zeros(count, dtype=np.int64)
    gaps = np.full(count, max_gap, dtype=np.int64)
    slot = np.cumsum(fillers + 1) - 1  # where each real entry lands
    stored[slot] = flat[positions]
    gaps[slot] = gap
    return stored, gaps


def dense_from_streams(stored: np.ndarray, gaps: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`sparse_streams`: (stored, gaps) -> flattened indices of ``size``."""
    positions = np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1
    if len(positions) and positions[-1] >= size:
        raise ValueError("sparse stream runs past the end of the layer")
    out = np.zeros(size, dtype=np.int64)
    out[positions] = stored
    return out


def _pack_fixed(values: np.ndarray, width: int) -> bytes:
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1)
    bits = (values[:, None] >> shifts[None, :]) & 1
    return np.packbits(bits.astype(np.uint8).ravel()).tobytes()


def _unpack_fixed(data: bytes, count: int, width: int) -> np.ndarray:
    if len(data) * 8 < count * width:
        raise FormatError("fixed-width stream is shorter than its entry count")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width]
    return bits.reshape(count, width).astype(np.int64) @ (1 << np.arange(width - 1, -1, -1))


def _section(tag: bytes, name: str, payload: bytes) -> bytes:
    raw_name = name.encode()
    head = SECTION_HEAD.pack(tag, len(raw_name), len(payload))
    body = head + raw_name + payload
    return body + struct.pack("<I", zlib.crc32(body))


def encode_conv(
    layer: QLayer, codebook: np.ndarray, indices: np.ndarray, bits: int, coding: int
) -> bytes:
    c_out, c_in, k, _ = layer.weight.shape
    stored, gaps = sparse_streams(indices)
    if coding == CODING_HUFFMAN:
        idx_lengths = huffman.code_lengths(np.bincount(stored, minlength=256))
        gap_lengths = huffman.code_lengths(np.bincount(gaps, minlength=1 << GAP_BITS))
        idx_stream = huffman.encode(stored, idx_lengths)
        gap_stream = huffman.encode(gaps, gap_lengths)
        tables = idx_lengths.astype(np.uint8).tobytes() + gap_lengths.astype(np.uint8).tobytes()
    else:
        idx_stream = _pack_fixed(stored, bits)
        gap_stream = _pack_fixed(gaps, GAP_BITS)
        tables = b""
    head = CONV_HEAD.pack(
        c_out, c_in, k, bits, coding, len(codebook), len(stored), len(idx_stream), len(gap_stream)
    )
    params = (
        np.asarray(codebook, dtype=np.int8).tobytes()
        + layer.bias.astype("<i4").tobytes()
        + layer.multiplier.astype("<u2").tobytes()
        + layer.shift.astype("u1").tobytes()
        + layer.weight_scale.astype("<f4").tobytes()
    )
    return head + params + tables + idx_stream + gap_stream


def write_model(
    path,
    network: QuantizedNetwork,
    shared: dict,
    bits: int,
    coding: int = CODING_HUFFMAN,
    meta: dict | None = None,
) -> dict[str, int]:
    """Write ``network`` (conv weights as ``shared[name] = (codebook, indices)``) to ``path``.

    The graph is checked first (:func:`fpga.spec.graph.check_network`: what the reader would refuse
    is never written) and the file is replaced atomically (:func:`fpga.spec.files.atomic_write`: a
    failed write leaves the previous file as it was). Returns the size of every section in bytes.
    """
    try:
        check_network(network, meta)
    except GraphError as exc:
        raise FormatError(f"section graph: {str(exc).removeprefix('graph: ')}") from None
    graph = graph_json(network, meta)
    sections = [("graph", _section(b"GRPH", "graph", json.dumps(graph).encode()))]
    for layer in network.conv_layers:
        codebook, indices = shared[layer.name]
        payload = encode_conv(layer, codebook, indices, bits, coding)
        sections.append((layer.name, _section(b"CONV", layer.name, payload)))
    body = b"".join(blob for _, blob in sections)
    total = HEADER.size + HEADER_CRC.size + len(body)
    header = HEADER.pack(MAGIC, VERSION, coding, total, len(sections))
    atomic_write(path, header + struct.pack("<I", zlib.crc32(header)) + body)
    sizes = {"header": HEADER.size + HEADER_CRC.size}
    sizes.update({name: len(s) for name, s in sections})
    return sizes


# -- reading ---------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, section: str):
        self.data, self.pos, self.section = data, 0, section

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise FormatError(f"section {self.section}: truncated while reading {what}")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(item * count, what), dtype=dtype)


def conv_head(payload: bytes, name: str) -> tuple[int, ...]:
    """The checked fixed header of a CONV section: (c_out, c_in, k, bits, coding, codebook
    entries, stored entries, index stream bytes, gap stream bytes)."""
    if len(payload) < CONV_HEAD.size:
        raise FormatError(f"section {name}: truncated while reading layer header")
    head = CONV_HEAD.unpack(payload[: CONV_HEAD.size])
    c_out, c_in, k, bits, coding, cb_len, n_stored, _, _ = head
    size = c_out * c_in * k * k
    if not (0 < c_out <= MAX_CHANNELS and 0 < c_in <= MAX_CHANNELS and k in IMAGE_KERNELS):
        raise FormatError(f"section {name}: absurd shape {c_out}x{c_in}x{k}x{k}")
    if size > MAX_WEIGHTS_PER_LAYER or n_stored > size:
        raise FormatError(f"section {name}: absurd weight count {size} / stored {n_stored}")
    if bits not in (4, 6, 8) or coding not in (CODING_FIXED, CODING_HUFFMAN):
        raise FormatError(f"section {name}: unknown bits {bits} or coding {coding}")
    if not 1 <= cb_len <= (1 << bits):
        raise FormatError(f"section {name}: codebook of {cb_len} entries for {bits}-bit indices")
    return head


def decode_conv(payload: bytes, name: str):
    c_out, c_in, k, bits, coding, cb_len, n_stored, idx_bytes, gap_bytes = conv_head(payload, name)
    size = c_out * c_in * k * k
    r = _Reader(payload, name)
    r.take(CONV_HEAD.size, "layer header")
    codebook = r.array(np.int8, cb_len, "codebook").copy()
    if codebook[0] != 0:
        raise FormatError(f"section {name}: codebook entry 0 must be 0")
    bias = r.array("<i4", c_out, "biases").astype(np.int32)
    mult = r.array("<u2", c_out, "multipliers").astype(np.int64)
    shift = r.array("u1", c_out, "shifts").astype(np.int64)
    scale = r.array("<f4", c_out, "weight scales").astype(np.float64)
    if (shift > MAX_SHIFT).any():
        raise FormatError(f"section {name}: a shift is above {MAX_SHIFT}")
    if not np.isfinite(scale).all() or (scale <= 0).any():
        raise FormatError(f"section {name}: a weight scale is not finite and positive")
    try:
        if coding == CODING_HUFFMAN:
            idx_lengths = r.array("u1", 256, "index code table").astype(np.int64)
            gap_lengths = r.array("u1", 1 << GAP_BITS, "gap code table").astype(np.int64)
            stored = huffman.decode(r.take(idx_bytes, "index stream"), n_stored, idx_lengths)
            gaps = huffman.decode(r.take(gap_bytes, "gap stream"), n_stored, gap_lengths)
        else:
            stored = _unpack_fixed(r.take(idx_bytes, "index stream"), n_stored, bits)
            gaps = _unpack_fixed(r.take(gap_bytes, "gap stream"), n_stored, GAP_BITS)
        indices = dense_from_streams(stored, gaps, size)
    except (huffman.HuffmanError, ValueError) as exc:
        raise FormatError(f"section {name}: {exc}") from None
    if r.pos != len(payload):
        raise FormatError(f"section {name}: {len(payload) - r.pos} trailing bytes")
    if indices.max(initial=0) >= cb_len:
        raise FormatError(f"section {name}: index beyond the codebook")
    indices = indices.astype(np.uint8).reshape(c_out, c_in, k, k)
    return {
        "codebook": codebook,
        "indices": indices,
        "bias": bias,
        "multiplier": mult,
        "shift": shift,
        "weight_scale": scale,
        "bits": bits,
        "coding": coding,
        "stored": n_stored,
        "bytes": len(payload),
    }


class _NonFinite:
    """What ``NaN``/``Infinity`` parse to, so that the reader can name the field holding one."""

    def __init__(self, token: str):
        self.token = token


def _non_finite(value, keys: tuple = ()) -> tuple[tuple, str] | None:
    """(path of keys, token) of the first NaN/Infinity in a parsed graph, or None."""
    if isinstance(value, _NonFinite):
        return keys, value.token
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _non_finite(item, (*keys, key))
        if found:
            return found
    return None


def _field_name(graph, keys: tuple) -> str:
    """``layer 'fire2.squeeze': field 'out_scale'`` or ``field 'input_scale'`` for a key path."""
    layer = None
    if len(keys) >= 3 and keys[0] == "layers" and isinstance(graph.get("layers"), list):
        layer = graph["layers"][keys[1]]
    rest = keys[2:] if isinstance(layer, dict) and isinstance(layer.get("name"), str) else keys
    text = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in rest).lstrip(".")
    return f"layer {layer['name']!r}: field {text!r}" if rest is not keys else f"field {text!r}"


def _parse_graph(payload: bytes):
    if len(payload) > MAX_GRAPH_BYTES:
        raise FormatError(f"section graph: {len(payload):,} bytes, more than {MAX_GRAPH_BYTES:,}")
    try:
        graph = json.loads(payload, parse_constant=_NonFinite)
    except RecursionError:
        raise FormatError("section graph: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise FormatError(f"section graph: not valid JSON ({exc})") from None
    try:
        found = _non_finite(graph)
    except RecursionError:
        raise FormatError("section graph: JSON nested too deeply") from None
    if found:
        keys, token = found
        where = _field_name(graph, keys) if keys else "the graph"
        raise FormatError(
            f"section graph: {where} is {token}; every scale and number of a model must be finite"
        )
    return graph


def read_model(path) -> tuple[QuantizedNetwork, dict, dict]:
    """Read a ``.sqz`` file -> (network, {layer: (codebook, indices)}, info).

    Order of checks: bytes (header, section sizes, CRCs), then the graph (:mod:`fpga.spec.graph`:
    ops, edges, fields, every tensor shape and the memory the golden model needs) against the
    conv sections' headers, and only then are the weights decoded.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FormatError(f"header: {path} is larger than {MAX_FILE_BYTES:,} bytes")
    if len(data) < HEADER.size + HEADER_CRC.size:
        raise FormatError("header: file too short to be a .sqz model")
    magic, version, coding, total, n_sections = HEADER.unpack(data[: HEADER.size])
    if magic != MAGIC:
        raise FormatError(f"header: wrong magic {magic!r} (not a .sqz model)")
    (crc,) = HEADER_CRC.unpack(data[HEADER.size : HEADER.size + HEADER_CRC.size])
    if crc != zlib.crc32(data[: HEADER.size]):
        raise FormatError("header: CRC mismatch")
    if version != VERSION:
        raise FormatError(f"header: version {version}, this reader knows {VERSION}")
    if total != len(data):
        raise FormatError(f"header: file is {len(data)} bytes, header says {total} (truncated?)")
    if not 1 <= n_sections <= MAX_SECTIONS:
        raise FormatError(f"header: absurd section count {n_sections}")
    pos = HEADER.size + HEADER_CRC.size
    sections = []
    for i in range(n_sections):
        where = f"#{i}"
        if pos + SECTION_HEAD.size > len(data):
            raise FormatError(f"section {where}: truncated section header")
        tag, name_len, length = SECTION_HEAD.unpack(data[pos : pos + SECTION_HEAD.size])
        end = pos + SECTION_HEAD.size + name_len + length + 4
        if end > len(data):
            raise FormatError(f"section {where}: length {length} runs past the end of the file")
        body = data[pos : end - 4]
        (crc,) = struct.unpack("<I", data[end - 4 : end])
        raw_name = data[pos + SECTION_HEAD.size : pos + SECTION_HEAD.size + name_len]
        try:
            name = raw_name.decode()
        except UnicodeDecodeError:
            raise FormatError(f"section {where}: name is not UTF-8") from None
        if crc != zlib.crc32(body):
            raise FormatError(f"section {name or where}: CRC mismatch")
        sections.append((tag, name, body[SECTION_HEAD.size + name_len :]))
        pos = end
    if pos != len(data):
        raise FormatError(f"header: {len(data) - pos} bytes after the last section")
    if sections[0][0] != b"GRPH":
        raise FormatError("section graph: missing (must come first)")
    raw_graph = _parse_graph(sections[0][2])
    # conv sections: names, tags and shapes first, so the graph is checked before any decoding
    heads: dict[str, tuple[int, ...]] = {}
    for tag, name, payload in sections[1:]:
        if tag != b"CONV":
            raise FormatError(f"section {name}: unknown section tag {tag!r}")
        if name in heads:
            raise FormatError(f"section {name}: a second conv section of that name")
        heads[name] = conv_head(payload, name)
    weights_total = sum(h[0] * h[1] * h[2] * h[2] for h in heads.values())
    if weights_total > MAX_WEIGHTS_TOTAL:
        raise FormatError(f"header: {weights_total:,} weights, more than {MAX_WEIGHTS_TOTAL:,}")
    try:
        graph = check_graph(raw_graph, {name: h[:3] for name, h in heads.items()})
    except GraphError as exc:
        raise FormatError(f"section graph: {str(exc).removeprefix('graph: ')}") from None
    convs = {name: decode_conv(payload, name) for _, name, payload in sections[1:]}
    layers = []
    for fields in graph.layers:
        fields = dict(fields)
        conv = None
        if fields["op"] == "conv":
            conv = convs[fields["name"]]
            weight = conv["codebook"][conv["indices"]]
            try:
                check_accumulator(fields["name"], weight, conv["bias"])
            except GraphError as exc:
                raise FormatError(f"section {fields['name']}: {exc}") from None
            fields.update(
                weight=weight,
                bias=conv["bias"],
                multiplier=conv["multiplier"],
                shift=conv["shift"],
                weight_scale=conv["weight_scale"],
            )
        elif fields["op"] == "add":
            fields["multiplier"] = np.array(fields["multiplier"], dtype=np.int64)
            fields["shift"] = np.array(fields["shift"], dtype=np.int64)
        layers.append((QLayer(**fields), conv))
    network = QuantizedNetwork(
        graph.variant,
        graph.input_size,
        graph.input_scale,
        [layer for layer, _ in layers],
        labels=graph.labels,
        preprocessing=graph.preprocess,
    )
    shared = {layer.name: (conv["codebook"], conv["indices"]) for layer, conv in layers if conv}
    info = {
        "variant": network.variant,
        "input_size": network.input_size,
        "coding": coding,
        "bytes": len(data),
        "classes": graph.classes,
        "labels": None if graph.labels is None else list(graph.labels),
        "preprocess": graph.preprocess.to_json(),
        "meta": graph.meta,
        "layers": [
            {
                "name": layer.name,
                "shape": list(layer.weight.shape),
                "bits": conv["bits"],
                "codebook": len(conv["codebook"]),
                "stored": conv["stored"],
                "density": float((conv["indices"] != 0).mean()),
                "bytes": conv["bytes"],
            }
            for layer, conv in layers
            if conv
        ],
    }
    return network, shared, info


def load_network(path) -> QuantizedNetwork:
    """A ``.sqz`` model as a QuantizedNetwork (conv weights = codebook[indices])."""
    return read_model(path)[0]


def load_for_device(path) -> tuple[QuantizedNetwork, dict]:
    """(QuantizedNetwork, {layer: (codebook, indices)}) for the compiler."""
    network, shared, _ = read_model(path)
    return network, shared

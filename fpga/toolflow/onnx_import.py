"""Read an ONNX SqueezeNet-family network into the project's float graph (docs/onnx.md).

:func:`read_onnx` parses the file with the ``onnx`` package's protobuf classes (imported lazily;
no torch, no onnxruntime) and maps it onto the nodes :mod:`fpga.spec.floatgraph` runs, the same
form the bundled variants have (``fpga.spec.floatgraph.float_graph``), so quantization,
compression, the ``.sqz`` writer, the compiler, the golden model and the board need no special
case. Every construct the engine does not run is refused here, before any work, as one
:class:`OnnxError` naming the node, its op and the attribute, and listing what is supported.

Mapped ops (opsets 7..18, the default domain):

* ``Conv``: 1x1 and 3x3, stride 1 or 2, symmetric pads up to k//2, group 1, dilation 1; the conv
  that reads the image also 5x5 and 7x7 (the compiler lowers it by host im2col); weights and bias
  are initializers (or ``Constant`` nodes);
* ``BatchNormalization`` right after a conv (nothing else reading the conv's output): folded
  into its weights and bias;
* ``Relu`` after a conv or an add (fused), or on a tensor that is non-negative already (dropped);
* ``MaxPool`` 3x3 stride 2 without pads, ``ceil_mode`` 1 or 0;
* ``Concat`` on channels of convs that nothing else reads (the engine concatenates by output
  addressing); ``Add`` of two tensors of one shape (the bypass);
* the head: ``GlobalAveragePool``, an ``AveragePool`` over the whole map, or ``ReduceMean`` over
  H and W; after it only ``Flatten``, ``Reshape``, ``Squeeze`` and ``Softmax`` (the host computes
  the class probabilities from the logits);
* ``Dropout`` and ``Identity`` are removed.

The input is one float tensor ``(N, 3, S, S)`` with a static square side (the batch may be
symbolic); ``S`` becomes the model's input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpga.spec.errors import UserError
from fpga.spec.golden import conv_output_size, pool_output_size
from fpga.spec.graph import (
    ENGINE_KERNELS,
    ENGINE_STRIDES,
    IMAGE,
    IMAGE_KERNELS,
    INPUT_CHANNELS,
    MAX_CHANNELS,
    MAX_CONCAT_INPUTS,
    MAX_INPUT_SIZE,
    MAX_LAYERS,
    MAX_NAME,
    MIN_INPUT_SIZE,
    POOL_KERNEL,
    POOL_STRIDE,
)

#: opsets of the default domain read here (the ops above have the same meaning in all of them,
#: apart from where ReduceMean and Squeeze take their axes, which is handled)
MIN_OPSET, MAX_OPSET = 7, 18
#: the largest .onnx file parsed (protobuf's own limit is 2 GiB; SqueezeNet is 5 MB)
MAX_MODEL_BYTES = 512 * 1024 * 1024
#: elements of one initializer, and of all together: checked on the declared dims before
#: any tensor is allocated (SqueezeNet v1.0 has 1.25 M parameters; the .sqz format takes 32 Mi)
MAX_TENSOR_ELEMENTS = 64 * 1024 * 1024
MAX_TOTAL_ELEMENTS = 128 * 1024 * 1024
MAX_NODES = 4096

SUPPORTED = (
    "supported: Conv (1x1/3x3, stride 1/2, symmetric pads, group 1, dilation 1; the first conv "
    "also 5x5/7x7), BatchNormalization after a Conv, Relu, MaxPool 3x3/2 (ceil_mode 0/1), "
    "Concat (channels), Add, Dropout, Identity, Constant, and the head GlobalAveragePool / "
    "AveragePool / ReduceMean followed by Flatten, Reshape, Squeeze, Softmax (docs/onnx.md)"
)

#: ONNX TensorProto data types read as initializers -> NumPy dtype
_DTYPES = {1: np.float32, 11: np.float64, 6: np.int32, 7: np.int64}
_TYPE_NAMES = {10: "FLOAT16", 16: "BFLOAT16", 2: "UINT8", 3: "INT8", 9: "BOOL", 8: "STRING"}


class OnnxError(UserError, ValueError):
    """An ONNX file that cannot be imported; names the node, its op and the attribute."""


@dataclass
class ImportedGraph:
    """What :func:`read_onnx` returns: the float graph and what the host needs to feed it."""

    #: graph nodes in topological order, as fpga.spec.floatgraph.run takes them
    nodes: list[dict]
    #: float64 weights by ``<layer>.weight`` (OIHW) and ``<layer>.bias``, BatchNorm folded in
    weights: dict[str, np.ndarray]
    input_name: str  # the ONNX graph input (what onnxruntime is fed)
    input_size: int  # S of the (N, 3, S, S) input
    output_name: str  # the ONNX graph output
    classes: int
    softmax: bool  # the ONNX output is softmax(logits)
    opset: int
    #: ONNX node name of each layer (for messages and ``fpga.compress inspect``)
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def output_layer(self) -> str:
        return self.nodes[-1]["name"]


@dataclass
class _Value:
    kind: str  # "image", "layer" (a layer's (C, H, W) output), "logits" (the pooled class vector)
    layer: str | None
    shape: tuple[int, ...]
    nonneg: bool = False
    rank: int = 4  # ONNX rank of a logits tensor (4 after a pool, 2 after Flatten)


def _where(node, index: int) -> str:
    name = node.name or f"#{index}"
    return f"node {name!r:.80} ({node.op_type})"


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _refuse(where: str, what: str) -> OnnxError:
    return OnnxError(f"{where}: {what}; {SUPPORTED}")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UserError(
            "import-onnx needs the onnx package: pip install 'squeezefpga[toolflow]'"
        ) from None
    return onnx


def read_onnx(path) -> ImportedGraph:
    """Parse and map ``path`` (an .onnx file); :class:`OnnxError` for anything not supported."""
    onnx = _onnx()
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise OnnxError(f"{path} is a folder, not an ONNX model")
        if size > MAX_MODEL_BYTES:
            raise OnnxError(
                f"{path}: {size:,} bytes, more than {MAX_MODEL_BYTES:,} (save large weights as "
                "external data beside the model)"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise OnnxError(f"ONNX model not found: {path}") from None
    except OSError as exc:
        raise OnnxError(f"{path}: {exc.strerror or exc}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise OnnxError(
            f"{path}: not an ONNX model (the protobuf does not parse: truncated, or another kind "
            "of file)"
        ) from None
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node:
        raise OnnxError(
            f"{path}: not an ONNX model (a protobuf without an ir_version >= 3 and a graph of "
            "nodes)"
        )
    try:
        return _Importer(path, model).run()
    except OnnxError as exc:  # a node's error: say which file too
        message = str(exc)
        if message.startswith(f"{path}: "):
            raise
        raise OnnxError(f"{path}: {message}") from None


class _Importer:
    def __init__(self, path: Path, model):
        self.path, self.model, self.graph = path, model, model.graph
        self.folder = path.resolve().parent
        self.consts: dict[str, object] = {}  # name -> TensorProto (data not read yet)
        self.arrays: dict[str, np.ndarray] = {}
        self.values: dict[str, _Value] = {}
        self.nodes: list[dict] = []
        self.by_name: dict[str, dict] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.origin: dict[str, str] = {}
        self.names: set[str] = {IMAGE}
        self.softmax = False
        self.pooled = False

    def fail(self, what: str) -> OnnxError:
        return OnnxError(f"{self.path}: {what}")

    # -- the file's frame: opset, initializers, input, output -----------------------------------
    def run(self) -> ImportedGraph:
        self.opset = self._opset()
        if len(self.graph.node) > MAX_NODES:
            raise self.fail(f"{len(self.graph.node):,} nodes, more than {MAX_NODES:,}")
        total = 0
        for tensor in self.graph.initializer:
            total += self._declare(tensor, f"initializer {tensor.name!r:.80}")
        for index, node in enumerate(self.graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                tensor = self._constant(node, index)
                total += self._declare(tensor, _where(node, index))
                self.consts[node.output[0]] = tensor
        if total > MAX_TOTAL_ELEMENTS:
            raise self.fail(
                f"the initializers declare {total:,} elements, more than {MAX_TOTAL_ELEMENTS:,}"
            )
        for tensor in self.graph.initializer:
            self.consts[tensor.name] = tensor
        input_name, size = self._input()
        self.values[input_name] = _Value("image", None, (INPUT_CHANNELS, size, size))
        outputs = [o.name for o in self.graph.output]
        if len(outputs) != 1:
            raise self.fail(f"{len(outputs)} graph outputs; the model must have one (the classes)")
        order = self._topological(input_name)
        self.consumers: dict[str, int] = {outputs[0]: 1}
        for _, node in order:
            for name in node.input:
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
        for index, node in order:
            self._map(node, index)
        out = self.values.get(outputs[0])
        if out is None or out.kind != "logits":
            raise self.fail(
                f"the output {outputs[0]!r:.80} is not the class vector: the network must end in "
                "a global average pool (GlobalAveragePool, AveragePool over the whole map, or "
                "ReduceMean over H and W), optionally followed by Flatten/Reshape/Squeeze/Softmax"
            )
        nodes = self._used(out.layer)
        if len(nodes) > MAX_LAYERS:
            raise self.fail(f"{len(nodes):,} layers, more than {MAX_LAYERS:,}")
        return ImportedGraph(
            nodes=nodes,
            weights={k: v for k, v in self.weights.items() if k.rsplit(".", 1)[0] in self._kept},
            input_name=input_name,
            input_size=size,
            output_name=outputs[0],
            classes=out.shape[0],
            softmax=self.softmax,
            opset=self.opset,
            origin={n["name"]: self.origin[n["name"]] for n in nodes},
        )

    def _opset(self) -> int:
        versions = {o.domain: o.version for o in self.model.opset_import}
        version = versions.get("", versions.get("ai.onnx"))
        if version is None:
            raise self.fail("no opset of the default ONNX domain is imported")
        if not MIN_OPSET <= version <= MAX_OPSET:
            raise self.fail(
                f"opset {version}; opsets {MIN_OPSET}..{MAX_OPSET} are supported (export with "
                f"opset_version={MAX_OPSET} or lower)"
            )
        return version

    def _constant(self, node, index: int):
        from onnx import helper, numpy_helper

        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            return attrs["value"].t
        where = _where(node, index)
        for key in ("value_ints", "value_int", "value_floats", "value_float"):
            if key in attrs:
                value = helper.get_attribute_value(attrs[key])
                dtype = np.int64 if "int" in key else np.float32
                return numpy_helper.from_array(np.asarray(value, dtype=dtype), node.output[0])
        raise _refuse(where, f"attribute {sorted(attrs)[:1] or 'value'} is not supported")

    def _declare(self, tensor, where: str) -> int:
        """Check a tensor's declaration (type, dims, where its bytes are) without reading it;
        returns its element count."""
        if tensor.data_type not in _DTYPES:
            kind = _TYPE_NAMES.get(tensor.data_type, f"type {tensor.data_type}")
            raise self.fail(f"{where}: data type {kind} is not supported (export in float32)")
        dims = list(tensor.dims)
        if any(d < 0 for d in dims) or len(dims) > 8:
            raise self.fail(f"{where}: invalid dims {dims[:8]}")
        count = math.prod(dims)
        if count > MAX_TENSOR_ELEMENTS:
            raise self.fail(
                f"{where}: declares {count:,} elements (dims {dims[:8]}), more than "
                f"{MAX_TENSOR_ELEMENTS:,}; refused before reading it"
            )
        itemsize = np.dtype(_DTYPES[tensor.data_type]).itemsize
        if tensor.data_location == 1:  # EXTERNAL
            self._external(tensor, where, count * itemsize)
        elif tensor.HasField("raw_data"):
            if len(tensor.raw_data) != count * itemsize:
                raise self.fail(
                    f"{where}: {len(tensor.raw_data):,} data bytes for {count:,} elements "
                    "(truncated or inconsistent)"
                )
        else:
            stored = len(self._typed_field(tensor))
            if stored != count:
                raise self.fail(f"{where}: {stored:,} values for {count:,} elements")
        return count

    @staticmethod
    def _typed_field(tensor):
        return {
            1: tensor.float_data,
            11: tensor.double_data,
            6: tensor.int32_data,
            7: tensor.int64_data,
        }[tensor.data_type]

    def _external(self, tensor, where: str, nbytes: int) -> tuple[Path, int]:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts or "\\" in location:
            raise self.fail(
                f"{where}: external data at {location!r:.80}; external data must be a file in "
                "the model's own folder (a relative path without '..')"
            )
        target = (self.folder / location).resolve()
        if self.folder not in target.parents:
            raise self.fail(
                f"{where}: external data {location!r:.80} resolves outside the model's folder"
            )
        if not target.is_file():
            raise self.fail(f"{where}: external data file {location!r:.80} not found")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info.get("length", str(nbytes)))
        except ValueError:
            raise self.fail(f"{where}: external data offset/length are not integers") from None
        if offset < 0 or length != nbytes or offset + length > target.stat().st_size:
            raise self.fail(
                f"{where}: external data of {length:,} bytes at offset {offset:,} does not hold "
                f"its {nbytes:,} bytes within {location!r:.80}"
            )
        return target, offset

    def _array(self, name: str, where: str) -> np.ndarray:
        """The constant ``name`` as a NumPy array (read on first use)."""
        if name not in self.consts:
            raise _refuse(where, f"input {name!r:.80} must be a constant (an initializer)")
        if name not in self.arrays:
            tensor = self.consts[name]
            dtype = np.dtype(_DTYPES[tensor.data_type]).newbyteorder("<")
            count = math.prod(tensor.dims)
            if tensor.data_location == 1:
                target, offset = self._external(tensor, where, count * dtype.itemsize)
                with open(target, "rb") as f:
                    f.seek(offset)
                    raw = f.read(count * dtype.itemsize)
                array = np.frombuffer(raw, dtype=dtype)
            elif tensor.HasField("raw_data"):
                array = np.frombuffer(tensor.raw_data, dtype=dtype)
            else:
                array = np.asarray(self._typed_field(tensor), dtype=dtype)
            array = array.astype(dtype.newbyteorder("="), copy=True).reshape(tuple(tensor.dims))
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise self.fail(f"{where}: constant {name!r:.80} holds NaN or infinity")
            self.arrays[name] = array
        return self.arrays[name]

    def _input(self) -> tuple[str, int]:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise self.fail(
                f"{len(inputs)} graph inputs besides the initializers; the model must take one "
                "image tensor"
            )
        value = inputs[0]
        where = f"input {value.name!r:.80}"
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type != 1:
            raise self.fail(f"{where}: must be a float32 tensor")
        if not tensor.HasField("shape") or len(tensor.shape.dim) != 4:
            raise self.fail(f"{where}: must have a static shape (N, 3, S, S)")
        dims = tensor.shape.dim
        batch = dims[0]
        if batch.HasField("dim_value") and batch.dim_value != 1:
            raise self.fail(f"{where}: batch {batch.dim_value}; export with batch 1 (or symbolic)")
        static = []
        for axis, dim in zip("CHW", dims[1:], strict=True):
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                name = dim.dim_param or "?"
                raise self.fail(
                    f"{where}: dynamic input shape ({axis} is {name!r:.40}); the input must have "
                    "a static shape (N, 3, S, S): export with a fixed image size"
                )
            static.append(dim.dim_value)
        c, h, w = static
        if c != INPUT_CHANNELS:
            raise self.fail(f"{where}: {c} channels; the model must take 3 (an RGB/BGR image)")
        if h != w:
            raise self.fail(f"{where}: a {h}x{w} input; only square inputs (S x S) are supported")
        if not MIN_INPUT_SIZE <= h <= MAX_INPUT_SIZE:
            raise self.fail(
                f"{where}: input side {h}; it must be within {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"
            )
        return value.name, h

    def _topological(self, input_name: str) -> list[tuple[int, object]]:
        """(file index, node) of the nodes (Constants left out) in a topological order: the
        file's order where it is one (ONNX requires it), refusing undefined inputs and cycles."""
        producer: dict[str, int] = {}
        nodes = list(self.graph.node)
        for index, node in enumerate(nodes):
            for out in node.output:
                if out and (out in producer or out in self.consts or out == input_name):
                    if node.op_type == "Constant" and out in self.consts:
                        continue
                    raise _refuse(_where(node, index), f"output {out!r:.80} is defined twice")
                if out:
                    producer[out] = index
        waiting: dict[int, int] = {}
        readers: dict[int, list[int]] = {}
        for index, node in enumerate(nodes):
            if node.op_type == "Constant":
                continue
            deps = set()
            for name in node.input:
                if not name or name in self.consts or name == input_name:
                    continue
                if name not in producer:
                    raise _refuse(
                        _where(node, index),
                        f"input {name!r:.80} is not defined by any node, input or initializer",
                    )
                if nodes[producer[name]].op_type != "Constant":
                    deps.add(producer[name])
            waiting[index] = len(deps)
            for dep in deps:
                readers.setdefault(dep, []).append(index)
        ready = sorted(i for i, n in waiting.items() if n == 0)
        order = []
        while ready:
            index = ready.pop(0)
            order.append(index)
            for reader in readers.get(index, []):
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    ready.append(reader)
            ready.sort()
        if len(order) != len(waiting):
            stuck = min(i for i in waiting if i not in set(order))
            raise OnnxError(
                f"{self.path}: the graph has a cycle through {_where(nodes[stuck], stuck)}; an "
                "ONNX graph must be acyclic"
            )
        return [(i, nodes[i]) for i in order]

    # -- the nodes ----------------------------------------------------------------------------
    def _name(self, node, index: int, first_conv: bool) -> str:
        if first_conv:
            base = "conv1"  # the compiler lowers a 5x5/7x7 first conv by this name
        else:
            base = node.name.strip("/") or f"{node.op_type.lower()}{index}"
            suffix = "/" + node.op_type
            if base.endswith(suffix) and len(base) > len(suffix):
                base = base[: -len(suffix)]  # torch's "/fire2/squeeze/Conv" -> "fire2/squeeze"
            base = base[: MAX_NAME - 8]
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}.{n}"
        self.names.add(name)
        return name

    def _value(self, node, index: int, position: int = 0) -> _Value:
        name = node.input[position] if len(node.input) > position else ""
        if name in self.consts:
            raise _refuse(
                _where(node, index), f"input {name!r:.80} is a constant; it must be a tensor"
            )
        if name not in self.values:
            raise _refuse(_where(node, index), f"input {name!r:.80} is not produced by a mapped op")
        return self.values[name]

    def _only_output(self, node, index: int) -> None:
        for extra in node.output[1:]:
            if extra and self.consumers.get(extra, 0):
                raise _refuse(
                    _where(node, index), f"its output {extra!r:.80} is used (only the first is)"
                )

    def _layer(self, node, index: int, op: str, inputs, shape, nonneg, first_conv=False, **kw):
        name = self._name(node, index, first_conv)
        entry = dict(name=name, op=op, inputs=tuple(inputs), **kw)
        self.nodes.append(entry)
        self.by_name[name] = entry
        self.origin[name] = node.name or f"#{index}"
        if len(shape) == 3 and shape[0] > MAX_CHANNELS:
            raise _refuse(_where(node, index), f"{shape[0]:,} channels")
        self.values[node.output[0]] = _Value("layer", name, shape, nonneg)
        return entry

    def _map(self, node, index: int) -> None:
        where = _where(node, index)
        if node.domain not in ("", "ai.onnx"):
            raise _refuse(where, f"op {node.domain}.{node.op_type} is not supported")
        handler = getattr(self, f"_op_{node.op_type}", None)
        if handler is None:
            raise _refuse(where, f"op {node.op_type} is not supported")
        if self.pooled and node.op_type not in _TAIL_OPS:
            raise _refuse(
                where,
                "after the global average pool only Flatten/Reshape/Squeeze/Softmax may follow",
            )
        handler(node, index, where, _attrs(node))

    def _op_Constant(self, node, index, where, attrs) -> None:  # read up front
        pass

    def _op_Conv(self, node, index, where, attrs) -> None:
        x = self._value(node, index)
        if x.kind == "logits":
            raise _refuse(where, "a Conv after the global average pool")
        weight = self._array(node.input[1], where) if len(node.input) > 1 else None
        if weight is None or weight.ndim != 4 or weight.dtype.kind != "f":
            raise _refuse(where, "its weights must be a 4-D float initializer (O, I, kH, kW)")
        c_out, c_in, kh, kw = weight.shape
        if attrs.get("group", 1) != 1:
            raise _refuse(where, f"attribute group={attrs['group']} is not supported (group 1)")
        dilations = list(attrs.get("dilations", [1, 1]))
        if any(d != 1 for d in dilations):
            raise _refuse(where, f"attribute dilations={dilations} is not supported (1)")
        auto_pad = _text(attrs.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID"):
            raise _refuse(where, f"attribute auto_pad={auto_pad} is not supported (explicit pads)")
        kernel = list(attrs.get("kernel_shape", [kh, kw]))
        if kernel != [kh, kw] or kh != kw:
            raise _refuse(where, f"attribute kernel_shape={kernel} is not supported (square k x k)")
        strides = list(attrs.get("strides", [1, 1]))
        if len(set(strides)) != 1 or strides[0] not in ENGINE_STRIDES:
            raise _refuse(where, f"attribute strides={strides} is not supported (1,1 or 2,2)")
        pads = [0] * 4 if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))
        first = x.kind == "image"
        kernels = IMAGE_KERNELS if first else ENGINE_KERNELS
        if kh not in kernels:
            sizes = "/".join(f"{k}x{k}" for k in kernels)
            where_in = "the first conv" if first else "a conv after the first"
            raise _refuse(
                where, f"attribute kernel_shape={kernel} is not supported for {where_in} ({sizes})"
            )
        if len(set(pads)) != 1 or not 0 <= pads[0] <= kh // 2:
            raise _refuse(
                where, f"attribute pads={pads} is not supported (equal on all sides, 0..{kh // 2})"
            )
        if first and any(n["op"] == "conv" and n["inputs"] == (IMAGE,) for n in self.nodes):
            raise _refuse(where, "a second Conv reads the image (the first layer reads it alone)")
        if c_in != x.shape[0]:
            raise _refuse(where, f"its weights take {c_in} channels, its input has {x.shape[0]}")
        bias = np.zeros(c_out)
        if len(node.input) > 2 and node.input[2]:
            bias = self._array(node.input[2], where)
            if bias.shape != (c_out,):
                raise _refuse(where, f"its bias has shape {bias.shape}, not ({c_out},)")
        _, h, w = x.shape
        stride, pad = strides[0], pads[0]
        ho, wo = conv_output_size(h, kh, stride, pad), conv_output_size(w, kh, stride, pad)
        if ho < 1 or wo < 1:
            raise _refuse(where, f"a {kh}x{kh} kernel does not fit its {h}x{w} input")
        src = IMAGE if first else x.layer
        entry = self._layer(
            node, index, "conv", (src,), (c_out, ho, wo), False, first_conv=first,
            stride=stride, pad=pad, relu=False,
        )  # fmt: skip
        self.weights[entry["name"] + ".weight"] = weight.astype(np.float64)
        self.weights[entry["name"] + ".bias"] = bias.astype(np.float64)

    def _op_BatchNormalization(self, node, index, where, attrs) -> None:
        x = self._value(node, index)
        conv = self.by_name.get(x.layer) if x.kind == "layer" else None
        if (
            conv is None
            or conv["op"] != "conv"
            or conv["relu"]
            or self.consumers.get(node.input[0], 0) != 1
        ):
            raise _refuse(
                where, "BatchNormalization must directly follow a Conv that nothing else reads"
            )
        if attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1:
            raise _refuse(where, "attribute training_mode/spatial: only inference BatchNorm")
        self._only_output(node, index)
        epsilon = float(attrs.get("epsilon", 1e-5))
        gamma, beta, mean, var = (self._array(n, where).astype(np.float64) for n in node.input[1:5])
        c = x.shape[0]
        if any(a.shape != (c,) for a in (gamma, beta, mean, var)) or (var + epsilon <= 0).any():
            raise _refuse(where, f"its scale/B/mean/var must be ({c},) with var + epsilon > 0")
        factor = gamma / np.sqrt(var + epsilon)
        name = conv["name"]
        self.weights[name + ".weight"] = (
            self.weights[name + ".weight"] * factor[:, None, None, None]
        )
        self.weights[name + ".bias"] = (self.weights[name + ".bias"] - mean) * factor + beta
        self.values[node.output[0]] = x

    def _op_Relu(self, node, index, where, attrs) -> None:
        x = self._value(node, index)
        layer = self.by_name.get(x.layer) if x.kind == "layer" else None
        fusable = (
            layer is not None
            and layer["op"] in ("conv", "add")
            and not layer["relu"]
            and self.consumers.get(node.input[0], 0) == 1
        )
        if fusable:
            layer["relu"] = True
            self.values[node.output[0]] = _Value("layer", x.layer, x.shape, True)
        elif x.nonneg:
            self.values[node.output[0]] = x  # a ReLU of a non-negative tensor changes nothing
        else:
            raise _refuse(
                where,
                "Relu must follow a Conv (or its BatchNormalization) or an Add that nothing else "
                "reads",
            )

    def _op_MaxPool(self, node, index, where, attrs) -> None:
        x = self._value(node, index)
        if x.kind != "layer":
            raise _refuse(where, "a MaxPool must read a layer's output (not the image)")
        checks = (
            ("kernel_shape", [POOL_KERNEL, POOL_KERNEL], None),
            ("strides", [POOL_STRIDE, POOL_STRIDE], [1, 1]),
            ("dilations", [1, 1], [1, 1]),
        )
        for key, wanted, default in checks:
            value = list(attrs.get(key, default or []))
            if value != wanted:
                raise _refuse(where, f"attribute {key}={value} is not supported ({wanted})")
        auto_pad = _text(attrs.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID"):
            raise _refuse(where, f"attribute auto_pad={auto_pad} is not supported")
        ceil_mode = attrs.get("ceil_mode", 0)
        if ceil_mode not in (0, 1) or attrs.get("storage_order", 0) != 0:
            raise _refuse(where, f"attribute ceil_mode={ceil_mode} is not supported (0 or 1)")
        self._only_output(node, index)
        c, h, w = x.shape
        if min(h, w) < POOL_KERNEL:
            raise _refuse(where, f"a 3x3 window does not fit its {h}x{w} input")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        ceil = self._pool_mode(where, pads, bool(ceil_mode), h, w)
        ho = pool_output_size(h, POOL_KERNEL, POOL_STRIDE, ceil)
        wo = pool_output_size(w, POOL_KERNEL, POOL_STRIDE, ceil)
        extra = {} if ceil else {"ceil_mode": False}
        self._layer(node, index, "maxpool", (x.layer,), (c, ho, wo), x.nonneg, **extra)

    @staticmethod
    def _pool_mode(where: str, pads: list, ceil: bool, h: int, w: int) -> bool:
        """The ceil mode of a MaxPool with ``pads``: none, or only at the bottom/right (how
        exporters write ceil mode for opsets < 10, which have no ``ceil_mode``: a MaxPool's pads
        never win the max, so they only add windows at the edge). Such a pool is the engine's
        ceil-mode or floor-mode pool when its output size is one of theirs."""
        if len(pads) != 4 or any(p < 0 for p in pads) or pads[0] or pads[1]:
            raise _refuse(where, f"attribute pads={pads} is not supported (none, or bottom/right)")
        if not any(pads):
            return ceil
        modes = []
        for size, pad in ((h, pads[2]), (w, pads[3])):
            out = pool_output_size(size + pad, POOL_KERNEL, POOL_STRIDE, ceil)
            if out == pool_output_size(size, POOL_KERNEL, POOL_STRIDE, True):
                modes.append(True)
            elif out == pool_output_size(size, POOL_KERNEL, POOL_STRIDE, False):
                modes.append(False)
            else:
                raise _refuse(
                    where, f"attribute pads={pads}: the padded pool is neither ceil nor floor mode"
                )
        if len(set(modes)) != 1:
            raise _refuse(
                where, f"attribute pads={pads}: ceil mode on one axis, floor on the other"
            )
        return modes[0]

    def _op_Concat(self, node, index, where, attrs) -> None:
        if attrs.get("axis") not in (1, -3):
            raise _refuse(where, f"attribute axis={attrs.get('axis')} is not supported (1)")
        count = len(node.input)
        if not 2 <= count <= MAX_CONCAT_INPUTS:
            raise _refuse(where, f"{count} inputs (2..{MAX_CONCAT_INPUTS})")
        xs = [self._value(node, index, i) for i in range(count)]
        for name, x in zip(node.input, xs, strict=True):
            layer = self.by_name.get(x.layer) if x.kind == "layer" else None
            if layer is None or layer["op"] != "conv" or self.consumers.get(name, 0) != 1:
                raise _refuse(
                    where,
                    f"input {name!r:.60} must be a Conv's output that nothing else reads (the "
                    "engine concatenates by where the convs write)",
                )
        if len({x.shape[1:] for x in xs}) != 1:
            raise _refuse(where, f"inputs of sizes {[x.shape for x in xs]}")
        shape = (sum(x.shape[0] for x in xs), *xs[0].shape[1:])
        nonneg = all(x.nonneg for x in xs)
        self._layer(node, index, "concat", [x.layer for x in xs], shape, nonneg)

    def _op_Add(self, node, index, where, attrs) -> None:
        if len(node.input) != 2:
            raise _refuse(where, "an Add takes two tensors")
        a, b = self._value(node, index, 0), self._value(node, index, 1)
        if a.kind != "layer" or b.kind != "layer" or a.shape != b.shape:
            raise _refuse(
                where, f"an Add of two layer outputs of one shape ({a.shape} and {b.shape})"
            )
        self._layer(node, index, "add", (a.layer, b.layer), a.shape, False, relu=False)

    def _pool(self, node, index, where, rank: int) -> None:
        x = self._value(node, index)
        if x.kind != "layer":
            raise _refuse(where, "the global average pool must read a layer's output")
        self._only_output(node, index)
        name = self._name(node, index, False)
        entry = dict(name=name, op="avgpool", inputs=(x.layer,))
        self.nodes.append(entry)
        self.by_name[name] = entry
        self.origin[name] = node.name or f"#{index}"
        self.values[node.output[0]] = _Value("logits", name, (x.shape[0],), x.nonneg, rank)
        self.pooled = True

    def _op_GlobalAveragePool(self, node, index, where, attrs) -> None:
        self._pool(node, index, where, 4)

    def _op_AveragePool(self, node, index, where, attrs) -> None:
        x = self._value(node, index)
        spatial = list(x.shape[1:])
        kernel = list(attrs.get("kernel_shape", []))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if kernel != spatial or any(pads) or _text(attrs.get("auto_pad", "NOTSET")) != "NOTSET":
            raise _refuse(
                where,
                f"attribute kernel_shape={kernel} pads={pads}: an AveragePool is supported as "
                f"the head, over the whole {spatial[0]}x{spatial[1]} map without pads",
            )
        self._pool(node, index, where, 4)

    def _op_ReduceMean(self, node, index, where, attrs) -> None:
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._array(node.input[1], where).tolist()
        if sorted(a % 4 for a in (axes or [])) != [2, 3]:
            raise _refuse(where, f"attribute axes={axes} is not supported (2, 3: H and W)")
        self._pool(node, index, where, 4 if attrs.get("keepdims", 1) else 2)

    # -- after the pool: the class vector passes through ----------------------------------------
    def _logits(self, node, index, where) -> _Value:
        x = self._value(node, index)
        if x.kind != "logits":
            raise _refuse(where, f"{node.op_type} is supported after the global average pool only")
        return x

    def _op_Flatten(self, node, index, where, attrs) -> None:
        x = self._logits(node, index, where)
        if attrs.get("axis", 1) != 1:
            raise _refuse(where, f"attribute axis={attrs.get('axis')} is not supported (1)")
        self.values[node.output[0]] = _Value("logits", x.layer, x.shape, x.nonneg, 2)

    def _op_Reshape(self, node, index, where, attrs) -> None:
        x = self._logits(node, index, where)
        shape = self._array(node.input[1], where).tolist() if len(node.input) > 1 else []
        known = [d for d in shape if d not in (-1, 0)]
        if not shape or shape[0] not in (1, -1, 0) or math.prod(known[1:] or [1]) > x.shape[0]:
            raise _refuse(where, f"a Reshape to {shape} of the {x.shape[0]} class scores")
        self.values[node.output[0]] = _Value("logits", x.layer, x.shape, x.nonneg, len(shape))

    def _op_Squeeze(self, node, index, where, attrs) -> None:
        x = self._logits(node, index, where)
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._array(node.input[1], where).tolist()
        if axes is not None and sorted(a % x.rank for a in axes) not in ([2, 3], [2], [3]):
            raise _refuse(where, f"attribute axes={axes} is not supported (2, 3)")
        rank = 2 if axes is None else x.rank - len(axes)
        self.values[node.output[0]] = _Value("logits", x.layer, x.shape, x.nonneg, rank)

    def _op_Softmax(self, node, index, where, attrs) -> None:
        x = self._logits(node, index, where)
        axis = attrs.get("axis", 1 if self.opset < 13 else -1)
        if not (axis == 1 or (axis == -1 and x.rank == 2)):
            raise _refuse(where, f"attribute axis={axis} is not supported (the class axis)")
        if self.softmax:
            raise _refuse(where, "a second Softmax")
        self.softmax = True
        self.values[node.output[0]] = _Value("logits", x.layer, x.shape, True, x.rank)

    def _op_Identity(self, node, index, where, attrs) -> None:
        self.values[node.output[0]] = self._value(node, index)

    def _op_Dropout(self, node, index, where, attrs) -> None:
        self._only_output(node, index)
        self.values[node.output[0]] = self._value(node, index)

    def _used(self, output: str) -> list[dict]:
        """The nodes the output depends on, in order (a branch nothing reads is dropped)."""
        keep, stack = set(), [output]
        while stack:
            name = stack.pop()
            if name in keep or name == IMAGE:
                continue
            keep.add(name)
            stack.extend(self.by_name[name]["inputs"])
        self._kept = keep
        nodes = [n for n in self.nodes if n["name"] in keep]
        if not nodes or nodes[0]["op"] != "conv" or nodes[0]["inputs"] != (IMAGE,):
            raise self.fail("the first layer must be a Conv that reads the image")
        return nodes


_TAIL_OPS = ("Flatten", "Reshape", "Squeeze", "Softmax", "Identity", "Dropout", "Constant")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

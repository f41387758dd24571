"""The one validation of a model graph, shared by every tool that reads or writes a model.

A ``.sqz`` file is untrusted input (someone will download one). :func:`check_graph` takes the
parsed graph JSON and the shapes of the file's conv sections and checks, before anything the size
of a tensor is allocated:

* structure: known ops only, unique layer names, inputs that exist and come earlier, the number of
  inputs each op takes, the image read only by the first layer (``conv1``, which the compiler may
  lower by host im2col), one global average pool and it is the last layer;
* fields: JSON types (an int is an int, ``relu`` is a bool), finite positive scales, strides,
  pads and kernels within what the engine and the golden model run, add multipliers and shift in
  the requantizer's ranges;
* shapes: every tensor's (C, H, W) computed from the input size, channel counts consistent along
  every edge (a conv's C_in is its input's channels, concat/add operands agree), no empty output,
  and the working memory of the golden model (activations held, unfolded conv inputs) bounded.

Errors are :class:`GraphError` naming the layer and the field; :mod:`fpga.spec.sqz` reports them as
its ``FormatError``. The limits are written down in docs/format.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fpga.spec.arch import IMPORTED, NUM_CLASSES, VARIANTS
from fpga.spec.errors import UserError
from fpga.spec.golden import (
    ACC_MAX,
    ACT_MIN,
    MAX_SHIFT,
    MULT_BITS,
    conv_output_size,
    pool_output_size,
)
from fpga.spec.network import OPS
from fpga.spec.preprocessing import CAFFE, PreprocessError, check_preprocess

#: input image side in pixels: 32 as fpga.toolflow.model's Table 1 requires (SqueezeNet keeps at
# least one
#: pixel after its stride-2 steps); 1024 keeps every variant within the memory bounds below
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 1024
#: image channels (RGB, as fpga.spec.image.preprocess produces)
INPUT_CHANNELS = 3
#: kernels the engine runs (hw/engine/engine.py accepts a CONV descriptor with kernel 1 or 3)
ENGINE_KERNELS = (1, 3)
#: kernels of the conv that reads the image: the compiler lowers it to a 1x1 conv by host im2col
#: (fpga.compiler.program.lower_conv1), so v1.0's 7x7 runs too; the .sqz conv sections allow these
IMAGE_KERNELS = (1, 3, 5, 7)
#: conv strides the engine runs (hw/engine/engine.py: stride 1 or 2)
ENGINE_STRIDES = (1, 2)
#: the max-pool is fixed 3x3 stride 2, ceil mode (golden.maxpool's defaults)
POOL_KERNEL, POOL_STRIDE = 3, 2
#: layers in a graph, inputs of a concat, channels of a tensor, length of a name
MAX_LAYERS = 1024
MAX_CONCAT_INPUTS = 16
MAX_CHANNELS = 65536
MAX_NAME = 128
#: classes of a model (the global average pool's channels) and the length of one class label
MAX_CLASSES = MAX_CHANNELS
MAX_LABEL = 256
#: the graph's ``variant``: a bundled one, or an imported graph
GRAPH_VARIANTS = (*VARIANTS, IMPORTED)
#: Working memory of the golden model, bounded per graph (the largest variant at MAX_INPUT_SIZE,
#: complex-bypass at 1024, needs 258 MiB of activations, 36.3 Mi unfolded elements (v1.0's conv1)
#: and 23.7 Mi elements in one tensor (conv1's output); worst case with all three bounds at their
#: limit: about 1.3 GB):
#: int8 bytes of all tensors together (golden.run_network(keep=True) holds every one)
MAX_ACTIVATION_BYTES = 384 * 1024 * 1024
#: elements of one conv's unfolded input (C_in * k * k * Ho * Wo, golden.im2col, float32/64)
MAX_UNFOLDED_ELEMENTS = 48 * 1024 * 1024
#: elements of one tensor (golden keeps a conv's accumulators as int64)
MAX_TENSOR_ELEMENTS = 32 * 1024 * 1024
#: the one name a layer may read that no layer defines: the int8 image
IMAGE = "input"
#: inputs each op takes (concat: 2..MAX_CONCAT_INPUTS)
INPUT_COUNTS = {
    "conv": (1, 1),
    "maxpool": (1, 1),
    "concat": (2, MAX_CONCAT_INPUTS),
    "add": (2, 2),
    "avgpool": (1, 1),
}
assert set(INPUT_COUNTS) == set(OPS)


class GraphError(UserError, ValueError):
    """A model graph the engine, compiler or golden model cannot run; names layer and field."""


@dataclass(frozen=True)
class Graph:
    """A validated graph: typed layer fields and every tensor's shape."""

    variant: str
    input_size: int
    input_scale: float
    meta: dict
    #: name, op, inputs (tuple), out_scale, stride, pad, relu[, multiplier, shift]
    layers: list[dict]
    shapes: dict[str, tuple[int, ...]]  # (C, H, W) per tensor; (C,) for the avgpool
    classes: int = NUM_CLASSES
    labels: tuple[str, ...] | None = None  # None: ImageNet's (fpga.spec.image.model_labels)
    preprocess: object = CAFFE  # fpga.spec.preprocessing.Preprocessing


def _where(index: int, layer) -> str:
    name = layer.get("name") if isinstance(layer, dict) else None
    return f"layer {name!r}" if isinstance(name, str) and name else f"layer #{index}"


def _int(value, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphError(f"{where}: field {field!r} must be an integer, not {value!r:.40}")
    return value


def _scale(value, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GraphError(f"{where}: field {field!r} must be a number, not {value!r:.40}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise GraphError(f"{where}: field {field!r} is {value}; it must be finite and positive")
    return value


def _field(layer: dict, key: str, where: str):
    if key not in layer:
        raise GraphError(f"{where}: missing field {key!r}")
    return layer[key]


def _int_list(value, length: int, lo: int, hi: int, where: str, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise GraphError(f"{where}: field {field!r} must be a list of {length} integers")
    out = tuple(_int(v, where, field) for v in value)
    if any(not lo <= v <= hi for v in out):
        raise GraphError(f"{where}: field {field!r} = {list(out)} leaves {lo}..{hi}")
    return out


def check_graph(graph, convs: dict[str, tuple[int, int, int]]) -> Graph:
    """Validate a parsed graph JSON object against the conv sections' (C_out, C_in, k).

    Returns the typed :class:`Graph`; raises :class:`GraphError` naming the layer and the field.
    Nothing proportional to a tensor is allocated here.
    """
    if not isinstance(graph, dict):
        raise GraphError("the graph must be a JSON object")
    variant = _field(graph, "variant", "graph")
    if variant not in GRAPH_VARIANTS:
        raise GraphError(
            f"graph: unknown variant {variant!r:.40} (one of {', '.join(GRAPH_VARIANTS)})"
        )
    size = _int(_field(graph, "input_size", "graph"), "graph", "input_size")
    check_input_size(size, "graph: field 'input_size'")
    input_scale = _scale(_field(graph, "input_scale", "graph"), "graph", "input_scale")
    meta = graph.get("meta", {})
    if not isinstance(meta, dict):
        raise GraphError("graph: field 'meta' must be an object")
    classes, labels, preprocess = _task(graph)
    raw_layers = _field(graph, "layers", "graph")
    if not isinstance(raw_layers, list) or not 1 <= len(raw_layers) <= MAX_LAYERS:
        raise GraphError(f"graph: field 'layers' must be a list of 1..{MAX_LAYERS} layers")

    shapes: dict[str, tuple[int, ...]] = {IMAGE: (INPUT_CHANNELS, size, size)}
    activation_bytes = INPUT_CHANNELS * size * size
    layers: list[dict] = []
    used_convs: set[str] = set()
    for index, raw in enumerate(raw_layers):
        where = _where(index, raw)
        if not isinstance(raw, dict):
            raise GraphError(f"{where}: must be a JSON object")
        name = _field(raw, "name", where)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise GraphError(f"{where}: field 'name' must be a string of 1..{MAX_NAME} characters")
        if name in shapes:
            what = "the image's name" if name == IMAGE else "a duplicate name"
            raise GraphError(f"{where}: field 'name' is {what}")
        op = _field(raw, "op", where)
        if op not in OPS:
            raise GraphError(f"{where}: field 'op' is {op!r:.40}, not one of {', '.join(OPS)}")
        inputs = _field(raw, "inputs", where)
        lo, hi = INPUT_COUNTS[op]
        if not isinstance(inputs, list) or not lo <= len(inputs) <= hi:
            count = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise GraphError(f"{where}: field 'inputs' must list {count} tensors for a {op}")
        for src in inputs:
            if not isinstance(src, str) or src not in shapes:
                raise GraphError(
                    f"{where}: field 'inputs' names {src!r:.40}, which is not the image or an "
                    "earlier layer"
                )
            if len(shapes[src]) != 3:
                raise GraphError(f"{where}: field 'inputs' reads {src!r}, the network's output")
        if (IMAGE in inputs) != (index == 0):
            raise GraphError(
                f"{where}: field 'inputs': the image is read by the first layer, and only by it"
            )
        fields = {
            "name": name,
            "op": op,
            "inputs": tuple(inputs),
            "out_scale": _scale(_field(raw, "out_scale", where), where, "out_scale"),
            "stride": _int(_field(raw, "stride", where), where, "stride"),
            "pad": _int(_field(raw, "pad", where), where, "pad"),
            "relu": _field(raw, "relu", where),
        }
        if not isinstance(fields["relu"], bool):
            raise GraphError(f"{where}: field 'relu' must be true or false")
        ins = [shapes[src] for src in inputs]
        if op == "conv":
            shape = _conv_shape(index, where, fields, ins[0], convs)
            used_convs.add(name)
            c_in, h, w = ins[0]
            k = convs[name][2]
            unfolded = c_in * k * k * shape[1] * shape[2]
            if unfolded > MAX_UNFOLDED_ELEMENTS:
                raise GraphError(
                    f"{where}: its unfolded input has {unfolded:,} elements, more than "
                    f"{MAX_UNFOLDED_ELEMENTS:,} (lower input_size)"
                )
        else:
            if fields["stride"] != 1 or fields["pad"] != 0:
                raise GraphError(
                    f"{where}: fields 'stride'/'pad' are {fields['stride']}/{fields['pad']}; a "
                    f"{op} takes 1/0 (the max-pool is fixed {POOL_KERNEL}x{POOL_KERNEL}/"
                    f"{POOL_STRIDE})"
                )
            if op == "maxpool":
                ceil_mode = raw.get("ceil_mode", True)
                if not isinstance(ceil_mode, bool):
                    raise GraphError(f"{where}: field 'ceil_mode' must be true or false")
                fields["ceil_mode"] = ceil_mode
                c, h, w = ins[0]
                shape = (
                    c,
                    pool_output_size(h, POOL_KERNEL, POOL_STRIDE, ceil_mode),
                    pool_output_size(w, POOL_KERNEL, POOL_STRIDE, ceil_mode),
                )
            elif op == "concat":
                if len({s[1:] for s in ins}) != 1:
                    raise GraphError(f"{where}: field 'inputs': concat of sizes {ins}")
                shape = (sum(s[0] for s in ins), *ins[0][1:])
            elif op == "add":
                if ins[0] != ins[1]:
                    raise GraphError(
                        f"{where}: field 'inputs': add of shapes {ins[0]} and {ins[1]}"
                    )
                shape = ins[0]
                limit = 2**MULT_BITS - 1
                fields["multiplier"] = _int_list(
                    _field(raw, "multiplier", where), 2, 0, limit, where, "multiplier"
                )
                fields["shift"] = _int_list(
                    _field(raw, "shift", where), 1, 0, MAX_SHIFT, where, "shift"
                )
            else:  # avgpool: the network's output, one int32 sum per class
                if index != len(raw_layers) - 1:
                    raise GraphError(f"{where}: the global average pool must be the last layer")
                if ins[0][0] != classes:
                    raise GraphError(
                        f"{where}: field 'inputs': {ins[0][0]} channels; the output has one per "
                        f"class (the graph's 'classes': {classes})"
                    )
                shape = (ins[0][0],)
        if len(shape) == 3:
            if shape[0] > MAX_CHANNELS or min(shape) < 1:
                raise GraphError(f"{where}: output shape {shape} is empty or too large")
            if shape[0] * shape[1] * shape[2] > MAX_TENSOR_ELEMENTS:
                raise GraphError(
                    f"{where}: output shape {shape} has more than {MAX_TENSOR_ELEMENTS:,} elements"
                )
            activation_bytes += shape[0] * shape[1] * shape[2]
            if activation_bytes > MAX_ACTIVATION_BYTES:
                raise GraphError(
                    f"{where}: the activations up to here need {activation_bytes:,} bytes, more "
                    f"than {MAX_ACTIVATION_BYTES:,} (lower input_size)"
                )
        shapes[name] = shape
        layers.append(fields)
    if layers[-1]["op"] != "avgpool":
        raise GraphError(
            f"{_where(len(layers) - 1, raw_layers[-1])}: the last layer must be the "
            "global average pool (the class sums)"
        )
    unused = sorted(set(convs) - used_convs)
    if unused:
        raise GraphError(f"conv sections without a conv layer: {unused[:4]}")
    return Graph(variant, size, input_scale, meta, layers, shapes, classes, labels, preprocess)


def _task(graph: dict):
    """The graph's optional ``classes`` (default 1000), ``labels`` (a list of ``classes``
    strings; default None: ImageNet's) and ``preprocess`` (default Caffe), checked."""
    classes = graph.get("classes", NUM_CLASSES)
    _int(classes, "graph", "classes")
    if not 1 <= classes <= MAX_CLASSES:
        raise GraphError(f"graph: field 'classes' is {classes}; it must be 1..{MAX_CLASSES}")
    labels = graph.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != classes:
            raise GraphError(f"graph: field 'labels' must be a list of {classes} strings")
        for label in labels:
            if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL:
                raise GraphError(
                    f"graph: field 'labels' holds {label!r:.40}; each label is a string of "
                    f"1..{MAX_LABEL} characters"
                )
        labels = tuple(labels)
    try:
        preprocess = check_preprocess(graph["preprocess"]) if "preprocess" in graph else CAFFE
    except PreprocessError as exc:
        raise GraphError(f"graph: field 'preprocess': {exc}") from None
    return classes, labels, preprocess


def _conv_shape(index, where, fields, in_shape, convs) -> tuple[int, int, int]:
    name = fields["name"]
    if name not in convs:
        raise GraphError(f"{where}: a conv without a conv section of that name")
    c_out, c_in, k = convs[name]
    kernels = IMAGE_KERNELS if index == 0 else ENGINE_KERNELS
    if k not in kernels:
        raise GraphError(
            f"{where}: kernel {k}x{k}; the engine runs {_sizes(ENGINE_KERNELS)} (the first "
            f"layer, lowered by host im2col, also {_sizes(IMAGE_KERNELS)})"
        )
    if index == 0 and k not in ENGINE_KERNELS and name != "conv1":
        raise GraphError(
            f"{where}: a {k}x{k} first layer must be named 'conv1' (the compiler lowers it by name)"
        )
    stride, pad = fields["stride"], fields["pad"]
    if stride not in ENGINE_STRIDES:
        strides = " or ".join(str(v) for v in ENGINE_STRIDES)
        raise GraphError(f"{where}: field 'stride' is {stride}; the engine runs stride {strides}")
    if not 0 <= pad <= k // 2:
        raise GraphError(f"{where}: field 'pad' is {pad}; a {k}x{k} kernel takes 0..{k // 2}")
    if c_in != in_shape[0]:
        raise GraphError(
            f"{where}: its weights take {c_in} input channels, its input "
            f"{fields['inputs'][0]!r} has {in_shape[0]}"
        )
    _, h, w = in_shape
    ho, wo = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
    if ho < 1 or wo < 1:
        raise GraphError(f"{where}: a {k}x{k} kernel does not fit its {h}x{w} input")
    return (c_out, ho, wo)


def _sizes(kernels) -> str:
    return ", ".join(f"{k}x{k}" for k in kernels)


def check_input_size(size: int, what: str = "--size") -> int:
    """``size`` if it is an input side the tools run, else :class:`GraphError` saying the range."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise GraphError(f"{what} must be an integer")
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise GraphError(
            f"{what} is {size}; it must be within {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels"
        )
    return size


def check_accumulator(name: str, weight: np.ndarray, bias: np.ndarray) -> None:
    """Refuse a conv whose int32 accumulator could overflow on some int8 input.

    Worst case per output channel: ``|bias| + 128 * sum |w|`` (inputs are -128..127);
    ``golden.conv2d`` would raise OverflowError on such an input, so the file is refused instead.
    """
    c_out = weight.shape[0]
    worst = np.abs(weight.reshape(c_out, -1).astype(np.int64)).sum(axis=1) * -ACT_MIN
    worst += np.abs(bias.astype(np.int64))
    if c_out and int(worst.max()) > ACC_MAX:
        channel = int(worst.argmax())
        raise GraphError(
            f"layer {name!r}: channel {channel}'s bias and weights can overflow the int32 "
            "accumulator"
        )


def graph_json(network, meta: dict | None = None) -> dict:
    """The graph of a :class:`fpga.spec.network.QuantizedNetwork` as the .sqz JSON object.

    ``classes``, ``labels`` and ``preprocess`` are written when they differ from what a file
    without them means (1000 ImageNet classes, Caffe preprocessing), so the bundled variants'
    files are byte for byte what they were before ONNX import existed."""
    task = {}
    classes = _output_channels(network)
    if network.labels is not None:
        task["classes"] = len(network.labels)
        task["labels"] = list(network.labels)
    elif classes is not None and classes != NUM_CLASSES:
        task["classes"] = classes
    if network.preprocessing != CAFFE:
        task["preprocess"] = network.preprocessing.to_json()
    return {
        "variant": network.variant,
        "input_size": network.input_size,
        "input_scale": network.input_scale,
        **task,
        "meta": meta or {},
        "layers": [
            {
                "name": layer.name,
                "op": layer.op,
                "inputs": list(layer.inputs),
                "out_scale": layer.out_scale,
                "stride": layer.stride,
                "pad": layer.pad,
                "relu": layer.relu,
                **(
                    {
                        "multiplier": [int(v) for v in layer.multiplier],
                        "shift": [int(v) for v in layer.shift],
                    }
                    if layer.op == "add"
                    else {}
                ),
                **({"ceil_mode": False} if layer.op == "maxpool" and not layer.ceil_mode else {}),
            }
            for layer in network.layers
        ],
    }


def _output_channels(network) -> int | None:
    """The class count of an in-memory network, None when its graph is too broken to say (the
    check that follows names the problem)."""
    try:
        return network.classes
    except (KeyError, IndexError, AttributeError, TypeError, RecursionError):
        return None


def check_network(network, meta: dict | None = None) -> Graph:
    """The same rules for an in-memory network (the writer checks before writing)."""
    graph = graph_json(network, meta)
    convs = {}
    for layer in network.conv_layers:
        c_out, c_in, k, k2 = layer.weight.shape
        if k != k2:
            raise GraphError(f"layer {layer.name!r}: kernel {k}x{k2} is not square")
        if layer.name in convs:
            raise GraphError(f"layer {layer.name!r}: field 'name' is a duplicate name")
        convs[layer.name] = (c_out, c_in, k)
        check_accumulator(layer.name, layer.weight, layer.bias)
    return check_graph(graph, convs)

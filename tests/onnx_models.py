"""ONNX files for the import tests, made here: torch exports (``dynamo=False``) of the bundled
variants and of a small 10-class SqueezeNet v1.1-style network with seeded random weights, and
hand-built ONNX graphs (``onnx.helper``) for every construct the importer must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the 10-class network's input side and class names (an inspection camera's)
TEN_CLASS_SIZE = 128
TEN_CLASS_LABELS = [
    "bolt",
    "nut",
    "washer",
    "screw",
    "spring",
    "rivet",
    "pin",
    "gear",
    "bearing",
    "empty tray",
]


def export(model, path: Path, size: int, opset: int = 13, **kwargs) -> Path:
    """``model`` (eval mode) exported with the TorchScript exporter at batch 1, ``size`` px.

    Without constant folding: with it, the exporter fuses each BatchNorm into the conv before it
    (from opset 9 on), and the importer's own folding would not be exercised."""
    kwargs.setdefault("do_constant_folding", False)
    import torch

    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            torch.zeros(1, 3, size, size),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=["scores"],
            **kwargs,
        )
    return path


def export_variant(variant: str, path: Path, size: int) -> Path:
    """A bundled variant with its bundled weights (``fpga.toolflow.model``) as ONNX."""
    from fpga.toolflow.model import load_model

    return export(load_model(variant), path, size)


def ten_class_model(ceil_modes=(True, False, True), softmax: bool = True, seed: int = 34):
    """A SqueezeNet v1.1-style network for 10 classes (seeded random He-initialised weights):
    conv1 3x3/2 pad 1
    + BatchNorm, four fire modules (BatchNorm after the first squeeze and the third expand3x3),
    three 3x3/2 max-pools with the given ceil modes, conv10 + ReLU, global average pool,
    flatten, softmax. At 128 px the pools see 64 (ceil 32 / floor 31), 32 (16 / 15) and
    15 or 16 pixels, so both modes change the shapes."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def bn(channels):
        norm = nn.BatchNorm2d(channels)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.1)
            norm.running_mean.normal_(0.0, 0.1)
            norm.running_var.uniform_(0.5, 2.0)
        return norm

    class Fire(nn.Module):
        def __init__(self, c_in, s, e, squeeze_bn=False, expand_bn=False):
            super().__init__()
            self.squeeze = nn.Conv2d(c_in, s, 1)
            self.squeeze_bn = bn(s) if squeeze_bn else nn.Identity()
            self.expand1x1 = nn.Conv2d(s, e, 1)
            self.expand3x3 = nn.Conv2d(s, e, 3, padding=1)
            self.expand_bn = bn(e) if expand_bn else nn.Identity()

        def forward(self, x):
            x = torch.relu(self.squeeze_bn(self.squeeze(x)))
            e3 = torch.relu(self.expand_bn(self.expand3x3(x)))
            return torch.cat([torch.relu(self.expand1x1(x)), e3], 1)

    class TenClass(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1)
            self.bn1 = bn(32)
            self.fire2 = Fire(32, 8, 16, squeeze_bn=True)
            self.fire3 = Fire(32, 8, 16)
            self.fire4 = Fire(32, 16, 32, expand_bn=True)
            self.fire5 = Fire(64, 16, 32)
            self.dropout = nn.Dropout(0.5)
            self.conv10 = nn.Conv2d(64, len(TEN_CLASS_LABELS), 1)

        def forward(self, x):
            pool = [nn.MaxPool2d(3, 2, ceil_mode=mode) for mode in ceil_modes]
            x = pool[0](torch.relu(self.bn1(self.conv1(x))))
            x = pool[1](self.fire3(self.fire2(x)))
            x = pool[2](self.fire4(x))
            x = self.fire5(x)
            x = torch.relu(self.conv10(self.dropout(x)))
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return torch.softmax(x, 1) if softmax else x

    model = TenClass()
    # He-initialised weights keep the activations alive through the depth (torch's default
    # initialisation fades them out: every photo would give the same scores); conv10 scaled up
    # so that the ten scores spread
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.normal_(module.bias, 0.0, 0.05)
        model.conv10.weight *= 3
    return model


def write_labels(path: Path) -> Path:
    path.write_text("\n".join(TEN_CLASS_LABELS) + "\n")
    return path


# -- hand-built graphs -----------------------------------------------------------------------------
def tiny_graph(
    conv2: dict | None = None,
    conv2_kernel: int = 1,
    conv2_groups: int = 1,
    act: str = "Relu",
    input_dims=(1, 3, 32, 32),
    opset: int = 13,
    extra_initializers=(),
    extra_nodes=(),
    head_input: str = "r2",
):
    """A valid small network: conv1 3x3/2 (3 -> 8) -> ReLU -> conv2 (8 -> 4, kernel
    ``conv2_kernel``, attributes ``conv2``) -> ``act`` -> GlobalAveragePool -> Flatten. The
    arguments break one thing at a time."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k = conv2_kernel
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(
            rng.normal(size=(4, 8 // conv2_groups, k, k)).astype(np.float32), "w2"
        ),
        *extra_initializers,
    ]
    attrs2 = {"kernel_shape": [k, k], **(conv2 or {})}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], "conv1", strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", **attrs2),
        helper.make_node(act, ["c2"], ["r2"], "act2"),
        *extra_nodes,
        helper.make_node("GlobalAveragePool", [head_input], ["pooled"], "pool"),
        helper.make_node("Flatten", ["pooled"], ["scores"], "flatten"),
    ]
    dims = [d if isinstance(d, int) else d for d in input_dims]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def bad_models(folder: Path) -> dict[str, tuple[Path, str]]:
    """Every construct the importer refuses: name -> (file, a phrase the error must contain)."""
    import onnx
    from onnx import TensorProto, helper

    out: dict[str, tuple[Path, str]] = {}

    def save(name, model, phrase):
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        out[name] = (path, phrase)

    save("unsupported-op", tiny_graph(act="Sigmoid"), "(Sigmoid): op Sigmoid is not supported")
    save(
        "group-conv",
        tiny_graph(conv2={"group": 2}, conv2_groups=2),
        "'conv2' (Conv): attribute group=2",
    )
    save(
        "dilation",
        tiny_graph(conv2={"dilations": [2, 2], "pads": [2, 2, 2, 2]}, conv2_kernel=3),
        "'conv2' (Conv): attribute dilations=[2, 2]",
    )
    save("stride-3", tiny_graph(conv2={"strides": [3, 3]}), "'conv2' (Conv): attribute strides")
    save(
        "5x5-mid-network",
        tiny_graph(conv2={"pads": [2, 2, 2, 2]}, conv2_kernel=5),
        "'conv2' (Conv): attribute kernel_shape=[5, 5]",
    )
    save("dynamic-shape", tiny_graph(input_dims=(1, 3, "height", "width")), "dynamic input shape")
    save("opset-19", tiny_graph(opset=19), "opset 19")
    save(
        "auto-pad",
        tiny_graph(conv2={"auto_pad": "SAME_UPPER"}, conv2_kernel=3),
        "attribute auto_pad=SAME_UPPER",
    )
    # a cycle: act2 reads the output of a node that reads act2's output
    cycle = tiny_graph(
        extra_nodes=[helper.make_node("Add", ["r2", "loop"], ["loop"], "add_loop")],
        head_input="loop",
    )
    cycle.graph.node[3].input[0] = "loop"
    save("cycle", cycle, "cycle")
    # 10^9 elements declared, no data: refused on the dims, before anything is allocated
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1000, 1000, 1000])
    save(
        "huge-initializer",
        tiny_graph(extra_initializers=[huge]),
        "declares 1,000,000,000 elements",
    )
    # external data outside the model's folder
    outside = tiny_graph()
    w2 = outside.graph.initializer[2]
    nbytes = len(w2.raw_data) or 4 * int(np.prod(w2.dims))
    w2.ClearField("raw_data")
    w2.ClearField("float_data")
    w2.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../weights.bin"), ("offset", "0"), ("length", str(nbytes))):
        entry = w2.external_data.add()
        entry.key, entry.value = key, value
    (folder.parent / "weights.bin").write_bytes(b"\0" * nbytes)
    save("external-dotdot", outside, "external data at '../weights.bin'")
    # a BatchNormalization after a ReLU (nothing to fold it into)
    c = 4
    bn_inits = [
        helper.make_tensor(name, TensorProto.FLOAT, [c], [value] * c)
        for name, value in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))
    ]
    save(
        "bn-after-relu",
        tiny_graph(
            extra_initializers=bn_inits,
            extra_nodes=[helper.make_node("BatchNormalization", ["r2", "g", "b", "m", "v"], ["n"])],
            head_input="n",
        ),
        "BatchNormalization must directly follow a Conv",
    )
    # no global average pool: the output is a conv's
    headless = tiny_graph()
    del headless.graph.node[4:]
    headless.graph.output[0].name = "r2"
    save("no-head", headless, "must end in a global average pool")
    # a truncated file and a protobuf that is not a model
    whole = tiny_graph().SerializeToString()
    (folder / "truncated.onnx").write_bytes(whole[: len(whole) // 2])
    out["truncated"] = (folder / "truncated.onnx", "not an ONNX model")
    tensor = helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])
    (folder / "tensor.onnx").write_bytes(tensor.SerializeToString())
    out["not-a-model"] = (folder / "tensor.onnx", "not an ONNX model")
    return out

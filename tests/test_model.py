"""SqueezeNet definitions: parameter counts, Table 1 shapes, weight loading and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fpga.spec import arch
from fpga.spec.arch import VARIANTS, ModelError, conv_shapes
from fpga.toolflow import model

PARAMS = {"v1.0": 1_248_424, "v1.1": 1_235_496, "simple-bypass": 1_248_424}


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_matches_table(variant):
    net = model.build_model(variant)
    counted = sum(p.numel() for p in net.parameters())
    assert counted == model.summary(variant)["totals"]["params"]
    if variant in PARAMS:
        assert counted == PARAMS[variant]
    else:  # complex bypass adds 1x1 convs at fire2 (96->128), fire4, fire6, fire8
        extra = sum(c * o + o for c, o in [(96, 128), (128, 256), (256, 384), (384, 512)])
        assert counted == PARAMS["v1.0"] + extra


# Table 1 of the paper (v1.0 at 224 in the paper's table uses 227 input in Caffe): outputs
TABLE1_V10 = {
    "conv1": (96, 111, 111),
    "maxpool1": (96, 55, 55),
    "fire2": (128, 55, 55),
    "fire3": (128, 55, 55),
    "fire4": (256, 55, 55),
    "maxpool2": (256, 27, 27),
    "fire5": (256, 27, 27),
    "fire6": (384, 27, 27),
    "fire7": (384, 27, 27),
    "fire8": (512, 27, 27),
    "maxpool3": (512, 13, 13),
    "fire9": (512, 13, 13),
    "conv10": (1000, 13, 13),
    "avgpool10": (1000, 1, 1),
}


def test_v10_table1_output_sizes():
    rows = {r["name"]: tuple(r["output"]) for r in model.layer_table("v1.0", 227)}
    assert rows == TABLE1_V10


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [227, 224, 99])
def test_table_shapes_equal_torch_forward(variant, size):
    net = model.build_model(variant).eval()
    seen = {}
    for name in ["conv1", *[f"fire{n}" for n in arch.FIRE_SHAPES], "conv10"]:
        getattr(net, name).register_forward_hook(
            lambda mod, inp, out, name=name: seen.__setitem__(name, tuple(out.shape[1:]))
        )
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size))
    assert out.shape == (1, 1000)
    rows = {r["name"]: tuple(r["output"]) for r in model.layer_table(variant, size)}
    for name, shape in seen.items():
        assert rows[name] == shape, name


def test_table_macs_match_fire_formula():
    rows = {r["name"]: r for r in model.layer_table("v1.0", 227)}
    # fire2: squeeze 96->16, expand 16->64 (1x1) and 16->64 (3x3), at 55x55
    assert rows["fire2"]["macs"] == (96 * 16 + 16 * 64 + 16 * 64 * 9) * 55 * 55
    assert rows["conv1"]["macs"] == 3 * 96 * 49 * 111 * 111


def test_summary_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "fpga.model", "summary", "--variant", "v1.1", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = json.loads(out.stdout)
    assert table["totals"]["params"] == 1_235_496
    assert {"layers", "totals"} <= set(table)
    assert table["totals"]["macs"] == sum(r["macs"] for r in table["layers"])


def test_unknown_variant_is_one_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "fpga.model", "summary", "--variant", "v2.0"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "unknown variant 'v2.0'" in out.stderr and "Traceback" not in out.stderr


def test_pretrained_weights_load_without_pickle_and_match_model():
    for variant in ("v1.0", "v1.1"):
        weights = model.load_weights(variant)
        assert set(weights) == set(model.expected_shapes(variant))
        assert all(w.dtype == np.float32 for w in weights.values())
    w10 = model.load_weights("v1.0")
    nonzero = sum(int((w != 0).sum()) for k, w in w10.items() if k.endswith("weight"))
    assert nonzero == 415_921  # the Deep Compression release is already pruned


def test_missing_weight_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        model.load_weights("v1.0", tmp_path / "nope.npz")


def test_corrupt_weight_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ModelError, match="not a readable"):
        model.load_weights("v1.0", bad)


def test_wrong_shapes_in_weight_file(tmp_path):
    weights = model.load_weights("v1.1")
    weights["conv1.weight"] = weights["conv1.weight"][:, :, :2]
    path = tmp_path / "w.npz"
    np.savez(path, **weights)
    with pytest.raises(ModelError, match="conv1.weight has shape"):
        model.load_weights("v1.1", path)


def test_v10_weights_into_v11_is_rejected():
    with pytest.raises(ModelError, match="needs"):
        model.load_weights("v1.1", arch.DATA_DIR / "squeezenet_v1_0.npz")


@pytest.mark.parametrize("variant", VARIANTS)
def test_spec_conv_shapes_are_the_models(variant):
    """``fpga.spec.arch.conv_shapes`` (no torch) names every conv weight the torch model has,
    with its shape."""
    expected = {
        k.removesuffix(".weight"): shape
        for k, shape in model.expected_shapes(variant).items()
        if k.endswith(".weight")
    }
    assert conv_shapes(variant) == expected

"""Quantization, preprocessing, classification and fidelity."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fpga.spec.image import PHOTOS_DIR, ImageError, bundled_photos, preprocess
from fpga.toolflow import quant

EXPECTED_TOP1 = {"chelsea.jpg": 285, "coffee.jpg": 967, "camera.jpg": 872}


def photo(name):
    return PHOTOS_DIR / name


@pytest.fixture(scope="module")
def images():
    return {p.name: preprocess(p) for p in bundled_photos()}


def test_preprocess_is_caffe_bgr_mean_subtracted():
    x = preprocess(photo("coffee.jpg"))
    assert x.shape == (3, 227, 227) and x.dtype == np.float32
    from PIL import Image

    rgb = np.asarray(
        Image.open(photo("coffee.jpg")).convert("RGB").resize((227, 227), Image.BILINEAR),
        dtype=np.float32,
    )
    np.testing.assert_allclose(x[0], rgb[:, :, 2] - 104)  # channel 0 is blue
    np.testing.assert_allclose(x[2], rgb[:, :, 0] - 123)


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_float_model_with_real_weights_is_right(variant, images):
    model = quant.load_model(variant)
    for name, img in images.items():
        assert int(np.argmax(quant.float_logits(variant, img, model))) == EXPECTED_TOP1[name]


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_int8_top1_equals_float_top1(variant, images):
    network = quant.quantize_network(variant, calibration_images=list(images.values()))
    model = quant.load_model(variant)
    for name, img in images.items():
        f = quant.float_logits(variant, img, model)
        q = quant.int8_logits(network, img)
        assert np.argmax(q) == np.argmax(f), name
        assert quant.agreement([f], [q])["snr_db"] > 15


def test_quantize_weight_per_channel_symmetric():
    w = np.array([[[[0.5]], [[-1.0]]], [[[0.0]], [[0.0]]]], dtype=np.float32)
    q, scale = quant.quantize_weight(w)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q[0].ravel(), [64, -127])  # 63.5 rounds away from zero
    np.testing.assert_array_equal(q[1].ravel(), [0, 0])
    assert scale[0] == pytest.approx(1 / 127) and scale[1] == 1.0


@pytest.mark.parametrize("real", [1e-9, 3.3e-5, 0.0123, 0.5, 0.99999, 1.0, 7.5, 40000.0])
def test_quantize_multiplier_is_accurate(real):
    mult, shift = quant.quantize_multiplier(real)
    assert 0 <= mult[0] < 2**16 and 0 <= shift[0] <= 47
    if real > 2**-32:
        assert mult[0] / 2.0 ** shift[0] == pytest.approx(real, rel=2**-15)


def test_quantize_multiplier_rejects_huge_factor():
    with pytest.raises(ValueError, match="too large"):
        quant.quantize_multiplier(2.0**17)


def test_concat_inputs_share_the_concat_scale():
    network = quant.quantize_network("v1.1", size=64)
    for layer in network.layers:
        if layer.op == "concat":
            scales = {network.layer(src).out_scale for src in layer.inputs}
            assert scales == {layer.out_scale}


def test_classify_cli_json():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpga.quant",
            "classify",
            str(photo("coffee.jpg")),
            "--variant",
            "v1.1",
            "--precision",
            "int8",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(out.stdout)
    assert results[0]["image"].endswith("coffee.jpg")
    top = results[0]["top5"]
    assert [set(t) for t in top] == [{"index", "label", "prob"}] * 5
    assert top[0]["index"] == 967 and top[0]["label"] == "espresso"
    assert all(a["prob"] >= b["prob"] for a, b in zip(top, top[1:], strict=False))


def test_report_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "fpga.quant", "report", "--json", "--size", "128"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert [r["variant"] for r in rows] == ["v1.0", "v1.1"]
    for row in rows:
        assert 0 <= row["top1_agreement"] <= 1 and 0 <= row["top5_agreement"] <= 1
        assert row["snr_db"] > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["classify", "missing.jpg"], "image not found"),
        (["classify", "pyproject.toml"], "cannot read image"),
        (["classify", "fpga/data/photos/coffee.jpg", "--variant", "v9"], "unknown variant"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    out = subprocess.run(
        [sys.executable, "-m", "fpga.quant", *args], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_unreadable_image_raises_image_error(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageError):
        preprocess(bad)

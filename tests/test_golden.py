"""fpga.spec.golden (the bit-exact spec) against an independent torch integer reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpga.spec import golden
from fpga.spec.arch import VARIANTS
from fpga.toolflow.quant import bundled_photos, preprocess, quantize_network
from tests import torch_reference as ref

I8 = dict(min_value=-128, max_value=127)


@st.composite
def conv_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.sampled_from([1, 3, 5, 7]))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, k // 2 + 1))
    c_in = draw(st.integers(1, 40))
    c_out = draw(st.integers(1, 24))
    h = draw(st.integers(max(1, k - 2 * pad), 20))
    w = draw(st.integers(max(1, k - 2 * pad), 20))
    relu = draw(st.booleans())
    x = rng.integers(-128, 128, (c_in, h, w), dtype=np.int8)
    weight = rng.integers(-128, 128, (c_out, c_in, k, k), dtype=np.int8)
    bias = rng.integers(-(2**20), 2**20, c_out).astype(np.int32)
    mult = rng.integers(0, 2**16, c_out)
    shift = rng.integers(0, 48, c_out)
    return x, weight, bias, mult, shift, stride, pad, relu


@settings(max_examples=250, deadline=None)
@given(conv_cases())
def test_conv_matches_torch_reference(case):
    x, weight, bias, mult, shift, stride, pad, relu = case
    expected = ref.conv(x, weight, bias, mult, shift, stride, pad, relu)
    actual = golden.conv2d(x, weight, bias, mult, shift, stride, pad, relu)
    assert actual.dtype == np.int8
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(3, 40), st.integers(3, 40), st.integers(0, 2**32 - 1))
def test_maxpool_matches_torch_ceil_mode(c, h, w, seed):
    x = np.random.default_rng(seed).integers(-128, 128, (c, h, w), dtype=np.int8)
    np.testing.assert_array_equal(golden.maxpool(x), ref.maxpool(x))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 47),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_add_matches_torch_reference(ma, mb, shift, relu, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (3, 5, 7), dtype=np.int8)
    b = rng.integers(-128, 128, (3, 5, 7), dtype=np.int8)
    np.testing.assert_array_equal(
        golden.add(a, b, ma, mb, shift, relu), ref.add(a, b, ma, mb, shift, relu)
    )


def test_avgpool_is_int32_sum():
    x = np.random.default_rng(1).integers(-128, 128, (10, 13, 13), dtype=np.int8)
    np.testing.assert_array_equal(golden.global_avgpool(x), ref.avgpool(x))


def test_requantize_rounds_half_up_and_clamps():
    acc = np.array([[-3, -2, -1, 1, 2, 3, 1000, -1000]], dtype=np.int32)
    # multiplier 1, shift 1: x/2 rounded half up
    out = golden.requantize(acc, np.array([1]), np.array([1]), relu=False)
    np.testing.assert_array_equal(out, [[-1, -1, 0, 1, 1, 2, 127, -128]])
    out = golden.requantize(acc, np.array([1]), np.array([1]), relu=True)
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1, 2, 127, 0]])


def test_requantize_rejects_out_of_range_parameters():
    acc = np.zeros((1, 2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="multiplier"):
        golden.requantize(acc, np.array([2**16]), np.array([1]))
    with pytest.raises(ValueError, match="shift"):
        golden.requantize(acc, np.array([1]), np.array([48]))


def test_accumulator_overflow_is_an_error():
    x = np.full((1, 1, 1), 127, dtype=np.int8)
    w = np.full((1, 1, 1, 1), 127, dtype=np.int8)
    with pytest.raises(OverflowError):
        golden.conv2d_acc(x, w, np.array([2**31 - 100], dtype=np.int32))


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_network_matches_torch_reference(variant):
    size = 227 if variant in ("v1.0", "v1.1") else 99
    images = [preprocess(p, size) for p in bundled_photos()]
    network = quantize_network(variant, size=size, calibration_images=images)
    x = network.quantize_input(images[0])
    expected = ref.run_network(network, x)
    actual = golden.run_network(network, x)
    for layer in network.layers:
        np.testing.assert_array_equal(actual[layer.name], expected[layer.name], err_msg=layer.name)
    # the final sums are not degenerate: classes are distinguishable
    assert len(np.unique(actual[network.output.name])) > 100

"""Deep Compression: release import, pruning, k-means, Huffman, the .sqz format and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpga.spec import golden, huffman
from fpga.spec.arch import DATA_DIR
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.sqz import (
    CODING_FIXED,
    CODING_HUFFMAN,
    FormatError,
    dense_from_streams,
    read_model,
    sparse_streams,
    write_model,
)
from fpga.toolflow.compress import compress_network, prune_weights
from fpga.toolflow.compress.core import kmeans_codebook
from fpga.toolflow.compress.deepcompression import read_deepcompression
from fpga.toolflow.model import load_weights
from tests.sqz_samples import shared_weights, tiny_network

RELEASE = DATA_DIR / "compressed_SqueezeNet.net"


def test_release_decodes_to_the_shipped_weights():
    weights, info = read_deepcompression(RELEASE)
    reference = load_weights("v1.0")
    for key, value in reference.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    assert sum(layer["stored"] for layer in info["layers"]) == 422_083
    assert sum(layer["nonzero"] for layer in info["layers"]) == 415_921


def test_truncated_release_is_a_format_error(tmp_path):
    bad = tmp_path / "x.net"
    bad.write_bytes(RELEASE.read_bytes()[:100_000])
    with pytest.raises(FormatError, match="truncated"):
        read_deepcompression(bad)


@pytest.mark.parametrize(
    "variant,size", [("v1.0", 227), ("v1.1", 64), ("simple-bypass", 64), ("complex-bypass", 64)]
)
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_round_trip_is_exact(variant, size, bits, tmp_path):
    density = None if variant == "v1.0" else 0.337
    network, shared, _ = compress_network(variant, bits, density, size)
    for coding in (CODING_HUFFMAN, CODING_FIXED):
        path = tmp_path / f"m{coding}.sqz"
        write_model(path, network, shared, bits, coding)
        decoded, shared2, info = read_model(path)
        assert decoded.variant == variant and info["coding"] == coding
        for a, b in zip(network.layers, decoded.layers, strict=True):
            assert (a.name, a.op, a.inputs, a.stride, a.pad, a.relu) == (
                b.name,
                b.op,
                b.inputs,
                b.stride,
                b.pad,
                b.relu,
            )
            for field in ("weight", "bias", "multiplier", "shift"):
                if getattr(a, field) is not None:
                    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        for name, (codebook, indices) in shared.items():
            assert len(codebook) <= 2**bits and codebook[0] == 0
            np.testing.assert_array_equal(shared2[name][1], indices)
    x = network.quantize_input(preprocess(bundled_photos()[0], size))
    np.testing.assert_array_equal(
        golden.run_network(network, x, keep=False)[network.output.name],
        golden.run_network(decoded, x, keep=False)[network.output.name],
    )


def test_pruning_reaches_the_target_density_and_keeps_zeros():
    weights = load_weights("v1.1")
    pruned, ratios = prune_weights(weights, 0.337)
    keys = [k for k in weights if k.endswith(".weight")]
    total = sum(weights[k].size for k in keys)
    nonzero = sum(int((pruned[k] != 0).sum()) for k in keys)
    assert abs(nonzero / total - 0.337) < 0.002
    for k in keys:  # the largest magnitudes survive
        kept = np.abs(weights[k][pruned[k] != 0])
        dropped = np.abs(weights[k][pruned[k] == 0])
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


def test_kmeans_codebook_on_the_int8_grid():
    rng = np.random.default_rng(0)
    values = np.clip(rng.normal(0, 30, 5000), -127, 127).astype(np.int8)
    values[:1000] = 0
    for bits in (4, 6, 8):
        codebook = kmeans_codebook(values, bits)
        assert codebook.dtype == np.int8 and codebook[0] == 0 and len(codebook) <= 2**bits
        assert len(np.unique(codebook)) == len(codebook)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=3000), st.integers(1, 256))
def test_huffman_round_trip(symbols, alphabet):
    symbols = np.array([s % alphabet for s in symbols], dtype=np.int64)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    data = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(data, len(symbols), lengths), symbols)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 8))
def test_huffman_one_symbol_alphabets(count, symbol):
    symbols = np.full(count, symbol)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=16))
    assert lengths[symbol] == 1 and lengths.sum() == 1
    np.testing.assert_array_equal(
        huffman.decode(huffman.encode(symbols, lengths), count, lengths), symbols
    )


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_sparse_positions_round_trip(size, density, seed):
    rng = np.random.default_rng(seed)
    flat = np.where(rng.random(size) < density, rng.integers(1, 64, size), 0)
    stored, gaps = sparse_streams(flat)
    assert gaps.max(initial=0) <= 15
    np.testing.assert_array_equal(dense_from_streams(stored, gaps, size), flat)


def test_all_zero_layer_round_trips(tmp_path):
    network = tiny_network(np.random.default_rng(1), zero=True)
    shared = {
        layer.name: (np.zeros(1, np.int8), np.zeros(layer.weight.shape, np.uint8))
        for layer in network.conv_layers
    }
    path = tmp_path / "zero.sqz"
    write_model(path, network, shared, 4)
    decoded, _, _ = read_model(path)
    assert all((layer.weight == 0).all() for layer in decoded.conv_layers)


def test_corruption_fuzz_always_ends_in_format_error(tmp_path):
    """>= 1000 random mutations and truncations of a valid file: the reader raises FormatError
    (never another exception) and returns quickly."""
    rng = np.random.default_rng(1234)
    network = tiny_network(rng)
    shared = shared_weights(network)
    path = tmp_path / "good.sqz"
    write_model(path, network, shared, 6)
    good = path.read_bytes()
    read_model(path)  # the original is valid
    bad = tmp_path / "bad.sqz"
    kinds = {"flip": 0, "truncate": 0, "insert": 0, "overwrite": 0}
    for trial in range(1200):
        data = bytearray(good)
        kind = ("flip", "truncate", "insert", "overwrite")[trial % 4]
        kinds[kind] += 1
        if kind == "flip":
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        elif kind == "truncate":
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == "insert":
            at = int(rng.integers(len(data)))
            data[at:at] = rng.bytes(int(rng.integers(1, 16)))
        else:  # absurd sizes in the header or a section header
            at = int(rng.integers(0, min(len(data) - 8, 80)))
            data[at : at + 4] = b"\xff\xff\xff\x7f"
        bad.write_bytes(bytes(data))
        with pytest.raises(FormatError):
            read_model(bad)
    assert min(kinds.values()) >= 300


def test_inspect_cli_and_errors(tmp_path):
    network, shared, _ = compress_network("v1.1", 4, 0.3, 64)
    path = tmp_path / "m.sqz"
    write_model(path, network, shared, 4)
    out = subprocess.run(
        [sys.executable, "-m", "fpga.compress", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["variant"] == "v1.1" and len(info["layers"]) == 26
    assert all(layer["bits"] == 4 for layer in info["layers"])
    junk = tmp_path / "junk.sqz"
    junk.write_bytes(b"not a model at all, just text")
    for target in (junk, tmp_path / "missing.sqz"):
        out = subprocess.run(
            [sys.executable, "-m", "fpga.compress", "inspect", str(target)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and out.stderr.startswith("error:")
        assert "Traceback" not in out.stderr


def test_classify_with_a_compressed_model(tmp_path):
    network, shared, _ = compress_network("v1.0", 6, None, 227)
    path = tmp_path / "m.sqz"
    write_model(path, network, shared, 6)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpga.quant",
            "classify",
            str(bundled_photos()[2]),
            "--model",
            str(path),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)[0]["top5"][0]["index"] == 967  # espresso

"""Bring your own model (issue 34): ONNX -> float graph -> int8 -> .sqz, against onnxruntime.

The ONNX files are made here (tests/onnx_models.py): torch exports of the bundled v1.0/v1.1 and
of a 10-class SqueezeNet v1.1-style network with BatchNorm and both max-pool ceil modes, and
hand-built graphs for every construct the importer refuses. onnxruntime is the oracle no one here
wrote: the float graph must agree with it within 1e-4 relative.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fpga.compiler.check import check_commands
from fpga.compiler.emulator import EngineEmulator
from fpga.compiler.program import compile_network, execute
from fpga.compiler.reference import run_resident
from fpga.compiler.resident import compile_resident
from fpga.spec import golden
from fpga.spec.arch import IMPORTED
from fpga.spec.config import DEFAULT_CONFIG, SMALL_CONFIG
from fpga.spec.image import bundled_photos, model_labels, preprocess
from fpga.spec.preprocessing import CAFFE, TORCHVISION
from fpga.spec.sqz import read_model
from fpga.toolflow import quant
from fpga.toolflow.compress.onnx_command import Reference, float_logits, oracle_difference
from fpga.toolflow.onnx_import import read_onnx
from tests.onnx_models import (
    TEN_CLASS_LABELS,
    TEN_CLASS_SIZE,
    bad_models,
    export,
    export_variant,
    ten_class_model,
    write_labels,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = str(bundled_photos()[0].parent)
#: the oracle's bound: |float graph - onnxruntime| / max |onnxruntime|
RELATIVE_TOLERANCE = 1e-4
#: int8 logits against onnxruntime's (quantization noise; v1.0/v1.1 measure 24/28 dB)
INT8_SNR_DB = 20
#: the bundled variants are compared at a reduced size (the comparison does not depend on it)
VARIANT_SIZE = 96


@pytest.fixture(scope="module")
def ten_class(tmp_path_factory) -> dict:
    """The 10-class model exported to ONNX and imported with the CLI into a .sqz (torchvision
    preprocessing, labels), once per module; the CLI's printout kept."""
    from fpga.toolflow.compress.cli import main

    folder = tmp_path_factory.mktemp("ten_class")
    onnx_path = export(ten_class_model(), folder / "ten.onnx", TEN_CLASS_SIZE)
    labels = write_labels(folder / "labels.txt")
    sqz = folder / "ten.sqz"
    argv = ["import-onnx", str(onnx_path), "-o", str(sqz), "--calibration", PHOTOS]
    argv += ["--preprocess", "torchvision", "--labels", str(labels), "--bits", "6"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    assert code == 0, printed.getvalue()
    return {"onnx": onnx_path, "sqz": sqz, "argv": argv, "main": main, "out": printed.getvalue()}


def imported_network(onnx_path, size, preprocessing=CAFFE):
    graph = read_onnx(onnx_path)
    images = [preprocess(p, size, preprocessing) for p in bundled_photos()]
    network = quant.quantize_network(
        IMPORTED, weights=graph.weights, nodes=graph.nodes, calibration_images=images
    )
    return graph, network, images


# -- the bundled variants, exported and imported -------------------------------------------------
@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_exported_variant_imports_to_the_builtin_quantized_network(variant, tmp_path):
    """Same int8 weights, biases, requantizers and scales layer by layer, same golden output."""
    path = export_variant(variant, tmp_path / f"{variant}.onnx", VARIANT_SIZE)
    graph, imported, _ = imported_network(path, VARIANT_SIZE)
    builtin = quant.quantize_network(variant, size=VARIANT_SIZE)
    assert graph.classes == 1000 and not graph.softmax and imported.classes == 1000
    assert imported.input_size == builtin.input_size == VARIANT_SIZE
    assert imported.input_scale == builtin.input_scale
    assert len(imported.layers) == len(builtin.layers)
    for ours, theirs in zip(imported.layers, builtin.layers, strict=True):
        where = f"{ours.name} vs {theirs.name}"
        assert (ours.op, ours.stride, ours.pad, ours.relu, ours.ceil_mode) == (
            theirs.op,
            theirs.stride,
            theirs.pad,
            theirs.relu,
            theirs.ceil_mode,
        ), where
        assert ours.out_scale == theirs.out_scale, where
        for field in ("weight", "bias", "multiplier", "shift", "weight_scale"):
            a, b = getattr(ours, field), getattr(theirs, field)
            assert (a is None) == (b is None), (where, field)
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=f"{where} {field}")
    assert imported.layers[0].name == "conv1"
    x = builtin.quantize_input(preprocess(bundled_photos()[1], VARIANT_SIZE))
    ours = golden.run_network(imported, x, keep=False)[imported.output.name]
    theirs = golden.run_network(builtin, x, keep=False)[builtin.output.name]
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_onnxruntime_agrees_with_the_float_graph(variant, tmp_path):
    """The oracle: onnxruntime and fpga.spec.floatgraph on the same preprocessed tensors."""
    path = export_variant(variant, tmp_path / f"{variant}.onnx", VARIANT_SIZE)
    graph = read_onnx(path)
    images = [preprocess(p, VARIANT_SIZE) for p in bundled_photos()]
    oracle = oracle_difference(graph, Reference(path, graph), images)
    print(
        f"{variant} at {VARIANT_SIZE} px: max |logit diff| {oracle['max_abs_diff']:.3g}, "
        f"relative {oracle['relative']:.3g}"
    )
    assert oracle["relative"] <= RELATIVE_TOLERANCE


# -- a user's model: 10 classes, 128 px, torchvision preprocessing, BatchNorm ---------------------
def test_ten_class_import_writes_classes_labels_and_preprocessing(ten_class, capsys):
    out = ten_class["out"]
    assert "float graph vs onnxruntime" in out and "int8 vs onnxruntime: top-1 agreement" in out
    assert "compressed (6-bit) vs onnxruntime" in out
    network, _, info = read_model(ten_class["sqz"])
    assert network.variant == IMPORTED and network.input_size == TEN_CLASS_SIZE
    assert network.classes == info["classes"] == 10
    assert model_labels(network) == TEN_CLASS_LABELS == info["labels"]
    assert network.preprocessing == TORCHVISION
    assert info["meta"]["source"] == "ten.onnx"
    # BatchNorm folded: no layer for it; both ceil modes kept
    assert [layer.ceil_mode for layer in network.layers if layer.op == "maxpool"] == [
        True,
        False,
        True,
    ]
    assert sum(layer.op == "conv" for layer in network.layers) == 14
    # inspect shows the new fields
    from fpga.toolflow.compress.cli import main

    assert main(["inspect", str(ten_class["sqz"])]) == 0
    shown = capsys.readouterr().out
    assert "classes: 10 (labels: bolt, nut, washer, screw, spring, ... (10))" in shown
    assert "preprocessing: torchvision (RGB" in shown


def test_ten_class_float_graph_agrees_with_onnxruntime(ten_class):
    """BatchNorm folded, floor- and ceil-mode pools, softmax output: within 1e-4 relative."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(ten_class["onnx"])).graph.node]
    assert ops.count("BatchNormalization") == 3  # folded by the importer, not the exporter
    graph = read_onnx(ten_class["onnx"])
    assert graph.softmax and graph.classes == 10 and graph.input_size == TEN_CLASS_SIZE
    images = [preprocess(p, TEN_CLASS_SIZE, TORCHVISION) for p in bundled_photos()]
    oracle = oracle_difference(graph, Reference(ten_class["onnx"], graph), images)
    print(f"10-class: max |diff| {oracle['max_abs_diff']:.3g}, relative {oracle['relative']:.3g}")
    assert oracle["relative"] <= RELATIVE_TOLERANCE
    # the raw logits too (not only their softmax): ONNX without the softmax
    logits = float_logits(graph, images[0])
    assert logits.shape == (10,) and np.ptp(logits) > 0


@pytest.mark.parametrize("config", [DEFAULT_CONFIG, SMALL_CONFIG], ids=["default", "small"])
def test_ten_class_sqz_runs_bit_exact_on_the_compiled_program(ten_class, config):
    """The .sqz the CLI wrote, compiled for the board (resident program, checked) and run on the
    engine emulator: equal to fpga.spec.golden bit for bit, for every photo."""
    network, shared, _ = read_model(ten_class["sqz"])
    program = compile_network(network, config, shared, split=True)
    resident = compile_resident(program, input_size=network.input_size)
    check_commands(resident)
    for photo in bundled_photos():
        x = network.quantize_input(preprocess(photo, network.input_size, network.preprocessing))
        logits, _ = run_resident(resident, resident.initial_dram(), x, EngineEmulator(config))
        np.testing.assert_array_equal(logits, golden.run_network(network, x)[network.output.name])


# -- max-pool ceil modes ---------------------------------------------------------------------
@pytest.mark.parametrize("ceil_modes", [(True, True, True), (False, False, False)])
def test_max_pool_ceil_modes_bit_exact_and_close_to_onnxruntime(ceil_modes, tmp_path):
    """All pools ceil mode 1, or all 0 (shapes 32/16/8 against 31/15/7): the tiled program on the
    emulator equals golden bit for bit; the float graph is within tolerance of onnxruntime, and
    the int8 top-1 equals onnxruntime's."""
    path = export(ten_class_model(ceil_modes, softmax=False), tmp_path / "m.onnx", TEN_CLASS_SIZE)
    graph, network, images = imported_network(path, TEN_CLASS_SIZE, TORCHVISION)
    pools = [layer for layer in network.layers if layer.op == "maxpool"]
    assert [p.ceil_mode for p in pools] == list(ceil_modes)
    shapes = golden.run_network(network, network.quantize_input(images[0]))
    sides = [shapes[p.name].shape[-1] for p in pools]
    assert sides == ([32, 16, 8] if ceil_modes[0] else [31, 15, 7])
    program = compile_network(network, DEFAULT_CONFIG)
    for image in images:
        x = network.quantize_input(image)
        tensors, _ = execute(program, EngineEmulator(DEFAULT_CONFIG), x)
        expected = golden.run_network(network, x)
        for pool in pools:
            np.testing.assert_array_equal(tensors[pool.name], expected[pool.name])
        np.testing.assert_array_equal(tensors[program.output], expected[network.output.name])
    oracle = oracle_difference(graph, Reference(path, graph), images)
    assert oracle["relative"] <= RELATIVE_TOLERANCE
    int8 = [quant.int8_logits(network, image) for image in images]
    fidelity = quant.agreement(oracle["reference"], int8)
    print(f"ceil modes {ceil_modes}: int8 vs onnxruntime {fidelity}")
    assert fidelity["snr_db"] > INT8_SNR_DB


@pytest.mark.parametrize("opset", [7, 9, 11, 18])
def test_every_opset_imports_the_same_network(opset, tmp_path):
    """Opsets 7..18: the same torch model exported at another opset (before 10 torch writes ceil
    mode as bottom/right pads, from 13 Squeeze/ReduceMean take their axes as inputs) imports to
    the same quantized network as at opset 13, and onnxruntime agrees with its float graph."""
    model = ten_class_model()
    base = export(model, tmp_path / "13.onnx", TEN_CLASS_SIZE, opset=13)
    path = export(model, tmp_path / f"{opset}.onnx", TEN_CLASS_SIZE, opset=opset)
    _, expected, _ = imported_network(base, TEN_CLASS_SIZE, TORCHVISION)
    graph, network, images = imported_network(path, TEN_CLASS_SIZE, TORCHVISION)
    assert graph.opset == opset
    for ours, theirs in zip(network.layers, expected.layers, strict=True):
        assert (ours.op, ours.ceil_mode, ours.out_scale) == (
            theirs.op,
            theirs.ceil_mode,
            theirs.out_scale,
        )
        if ours.op == "conv":
            np.testing.assert_array_equal(ours.weight, theirs.weight)
            np.testing.assert_array_equal(ours.bias, theirs.bias)
    oracle = oracle_difference(graph, Reference(path, graph), images)
    assert oracle["relative"] <= RELATIVE_TOLERANCE


# -- what is refused -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_onnx") / "models"
    folder.mkdir()
    return bad_models(folder)


BAD = [
    "unsupported-op",
    "group-conv",
    "dilation",
    "stride-3",
    "5x5-mid-network",
    "dynamic-shape",
    "cycle",
    "truncated",
    "huge-initializer",
    "external-dotdot",
    "not-a-model",
    "opset-19",
    "auto-pad",
    "bn-after-relu",
    "no-head",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_model_is_one_error_line_exit_2(name, bad, tmp_path, capsys):
    from fpga.toolflow.compress.cli import main

    path, phrase = bad[name]
    out = tmp_path / "out.sqz"
    code = main(["import-onnx", str(path), "-o", str(out), "--calibration", PHOTOS])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0] and str(path) in lines[0], lines[0]
    assert "Traceback" not in err and not out.exists()


def test_huge_initializer_refused_as_a_real_command_without_allocating(bad, tmp_path):
    """As ``python -m fpga.compress``, under a 2 GiB address-space limit (the declared tensor
    would take 4 GB) and with torch blocked: one line, exit 2."""
    path, phrase = bad["huge-initializer"]
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "sys.modules['torch'] = None\n"
        "from fpga.toolflow.compress.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["import-onnx", str(path), "-o", str(tmp_path / "o.sqz"), "--calibration", PHOTOS]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: ") and phrase in lines[0]


def test_labels_that_do_not_match_the_classes_are_refused(ten_class, tmp_path, capsys):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "x.sqz"
    argv = ["import-onnx", str(ten_class["onnx"]), "-o", str(out), "--calibration", PHOTOS]
    code = ten_class["main"]([*argv, "--labels", str(labels)])
    err = capsys.readouterr().err
    assert code == 2 and "3 labels, the model has 10 classes" in err and not out.exists()


def test_min_agreement_refuses_to_write(ten_class, tmp_path, capsys):
    """4 bits with 5 % of the weights left cannot keep top-1 agreement 1: nothing written."""
    out = tmp_path / "weak.sqz"
    argv = ["import-onnx", str(ten_class["onnx"]), "-o", str(out), "--calibration", PHOTOS]
    argv += ["--bits", "4", "--density", "0.05", "--min-agreement", "1"]
    code = ten_class["main"](argv)
    captured = capsys.readouterr()
    if code == 0:  # the model survived: the bound was met, the check cannot be seen failing
        pytest.fail(f"a 4-bit, 5 %-dense model kept top-1 agreement 1:\n{captured.out}")
    assert code == 2 and "below --min-agreement" in captured.err and not out.exists()


# -- the import is torch-free ----------------------------------------------------------------------
def test_import_runs_with_torch_blocked(ten_class, tmp_path):
    """``fpga.compress import-onnx`` with ``torch`` unimportable: the whole path (reader,
    calibration, quantization, compression, writer, onnxruntime) runs; the file equals the one
    written with torch importable (the same bytes: nothing on the path depends on torch)."""
    out = tmp_path / "no_torch.sqz"
    argv = [*ten_class["argv"]]
    argv[argv.index("-o") + 1] = str(out)
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from fpga.toolflow.compress.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules\n"
        "               if sys.modules[m] is not None)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes() == ten_class["sqz"].read_bytes()


# -- the model file's task fields (classes, labels, preprocess) -----------------------------------
def _sample(tmp_path):
    from fpga.spec.sqz import write_model
    from tests.sqz_samples import shared_weights, tiny_network

    network = tiny_network(np.random.default_rng(34))
    path = tmp_path / "old.sqz"
    write_model(path, network, shared_weights(network), 6)
    return path


def test_a_file_without_the_new_fields_means_caffe_and_imagenet(tmp_path):
    """Every file written before ONNX import: Caffe preprocessing, 1000 ImageNet labels; the
    writer leaves the fields out for such a network (the same bytes as before)."""
    from fpga.spec.image import load_labels
    from tests.test_graph_fuzz import graph_payload

    path = _sample(tmp_path)
    graph = json.loads(graph_payload(path.read_bytes()))
    assert not {"classes", "labels", "preprocess"} & set(graph)
    assert all("ceil_mode" not in layer for layer in graph["layers"])
    network, _, info = read_model(path)
    assert network.preprocessing == CAFFE and network.labels is None and network.classes == 1000
    assert model_labels(network) == load_labels() and info["classes"] == 1000
    assert info["preprocess"] == CAFFE.to_json() and info["labels"] is None


@pytest.mark.parametrize(
    "change,phrase",
    [
        ({"classes": 10}, "the graph's 'classes': 10"),
        ({"classes": 0}, "field 'classes' is 0"),
        ({"classes": True}, "field 'classes' must be an integer"),
        ({"labels": ["a", "b"]}, "field 'labels' must be a list of 1000 strings"),
        ({"labels": [""] * 1000}, "each label is a string of 1..256"),
        ({"preprocess": {"channel_order": "RGB"}}, "field 'preprocess': missing field"),
        ({"preprocess": {**CAFFE.to_json(), "channel_order": "GBR"}}, "'channel_order' is 'GBR'"),
        ({"preprocess": {**CAFFE.to_json(), "std": [1, 0, 1]}}, "field 'std' = [1.0, 0.0, 1.0]"),
        ({"preprocess": {**CAFFE.to_json(), "crop_fraction": 0.5}}, "must be 1 when 'resize'"),
        ({"preprocess": {**CAFFE.to_json(), "extra": 1}}, "unknown field 'extra'"),
        ({"variant": "onnx2"}, "unknown variant 'onnx2'"),
    ],
)
def test_bad_task_fields_are_format_errors(tmp_path, change, phrase):
    from fpga.spec.sqz import FormatError
    from tests.test_graph_fuzz import graph_payload, resign

    path = _sample(tmp_path)
    good = path.read_bytes()
    graph = json.loads(graph_payload(good))
    graph.update(change)
    path.write_bytes(resign(good, json.dumps(graph).encode()))
    with pytest.raises(FormatError, match="section graph") as error:
        read_model(path)
    assert phrase in str(error.value), str(error.value)


def test_a_floor_mode_pool_is_kept_by_the_file(tmp_path):
    from tests.test_graph_fuzz import graph_payload, resign

    path = _sample(tmp_path)
    good = path.read_bytes()
    graph = json.loads(graph_payload(good))
    graph["layers"][1]["ceil_mode"] = False  # pool1: 15 -> 7 either way at 32 px; kept anyway
    path.write_bytes(resign(good, json.dumps(graph).encode()))
    network, _, _ = read_model(path)
    assert network.layers[1].ceil_mode is False
    graph["layers"][1]["ceil_mode"] = 0
    path.write_bytes(resign(good, json.dumps(graph).encode()))
    with pytest.raises(ValueError, match="'ceil_mode' must be true or false"):
        read_model(path)


def test_center_crop_keeps_the_aspect_and_cuts_the_middle(tmp_path):
    """torchvision's Resize(short) + CenterCrop: a wide image's middle third (green) fills the
    crop; stretching the whole image (Caffe) keeps all three colours."""
    from PIL import Image

    pixels = np.zeros((90, 270, 3), np.uint8)
    pixels[:, :90, 0] = pixels[:, 90:180, 1] = pixels[:, 180:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    crop = preprocess(tmp_path / "wide.png", 64, TORCHVISION)  # RGB
    green = (255 - np.array(TORCHVISION.mean)) / np.array(TORCHVISION.std)
    np.testing.assert_allclose(crop[1], green[1], rtol=1e-5)
    assert (crop[0] < 0).all() and (crop[2] < 0).all()
    whole = preprocess(tmp_path / "wide.png", 64, CAFFE)  # BGR: red is channel 2
    assert whole[2, :, 0].max() > 0 and whole[0, :, -1].max() > 0


@pytest.mark.parametrize(
    "extra,phrase",
    [
        (["--calibration", "/nonexistent/photos"], "not a folder"),
        (["--calibration", "{empty}"], "no images"),
        (["--calibration", PHOTOS, "--mean", "1,2"], "--mean takes three numbers"),
        (["--calibration", PHOTOS, "--std", "1,0,1"], "field 'std'"),
        (["--calibration", PHOTOS, "--crop-fraction", "2"], "'crop_fraction' is 2"),
        (["--calibration", PHOTOS, "--labels", "/nonexistent/labels.txt"], "file not found"),
        (["--calibration", PHOTOS, "--max-images", "0"], "--max-images must be at least 1"),
        (["--calibration", PHOTOS, "--density", "0"], "--density must be a fraction"),
    ],
)
def test_bad_options_are_one_error_line_before_the_model_is_read(
    extra, phrase, ten_class, tmp_path, capsys
):
    (tmp_path / "empty").mkdir()
    extra = [arg.replace("{empty}", str(tmp_path / "empty")) for arg in extra]
    out = tmp_path / "o.sqz"
    code = ten_class["main"](["import-onnx", str(ten_class["onnx"]), "-o", str(out), *extra])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and phrase in lines[0], captured.err
    assert not captured.out and not out.exists()


def test_classify_with_an_imported_model_prints_its_labels(ten_class, capsys):
    """``fpga.quant classify --model``: the model's preprocessing and class names."""
    from fpga.toolflow.quant import main

    photo = str(bundled_photos()[1])
    assert main(["classify", photo, "--model", str(ten_class["sqz"]), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    network, _, _ = read_model(ten_class["sqz"])
    x = preprocess(photo, TEN_CLASS_SIZE, TORCHVISION)
    best = int(np.argmax(quant.int8_logits(network, x)))
    assert result["top5"][0] == {
        "index": best,
        "label": TEN_CLASS_LABELS[best],
        "prob": result["top5"][0]["prob"],
    }
    assert {entry["label"] for entry in result["top5"]} <= set(TEN_CLASS_LABELS)


def test_external_data_from_the_model_folder_is_read_and_a_symlink_out_is_refused(tmp_path):
    import onnx

    from fpga.toolflow.onnx_import import OnnxError
    from tests.onnx_models import tiny_graph

    inline = tmp_path / "inline.onnx"
    onnx.save(tiny_graph(), str(inline))
    folder = tmp_path / "model"
    folder.mkdir()
    external = folder / "external.onnx"
    onnx.save_model(
        tiny_graph(),
        str(external),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (folder / "weights.bin").stat().st_size > 0
    ours, theirs = read_onnx(external), read_onnx(inline)
    assert ours.weights.keys() == theirs.weights.keys()
    for key in ours.weights:
        np.testing.assert_array_equal(ours.weights[key], theirs.weights[key])
    # the same file name, now a symlink to a file outside the folder
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    (folder / "weights.bin").unlink()
    (folder / "weights.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(OnnxError, match="resolves outside the model's folder"):
        read_onnx(external)

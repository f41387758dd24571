"""A user's own model on the simulated board (issue 34): a 10-class SqueezeNet v1.1-style network
at 128 px (seeded random weights, BatchNorm folded, a floor-mode and two ceil-mode max-pools),
exported from torch to ONNX, imported with ``fpga.compress import-onnx`` (torchvision
preprocessing, the user's labels), then classified by ``host.infer --model OUT.sqz`` in resident
mode: bit-exact against fpga.spec.golden, the user's class names printed."""

from __future__ import annotations

import json

import pytest

from fpga.spec.image import bundled_photos
from tests.onnx_models import (
    TEN_CLASS_LABELS,
    TEN_CLASS_SIZE,
    export,
    ten_class_model,
    write_labels,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_imported_ten_class_model_runs_bit_exact_on_the_board(resident_board, tmp_path, capsys):
    from fpga.toolflow.compress.cli import main as compress
    from host.classify import print_results
    from host.infer import main as infer

    onnx_path = export(ten_class_model(), tmp_path / "ten.onnx", TEN_CLASS_SIZE)
    labels = write_labels(tmp_path / "labels.txt")
    model = tmp_path / "ten.sqz"
    photos_dir = str(bundled_photos()[0].parent)
    argv = ["import-onnx", str(onnx_path), "-o", str(model), "--calibration", photos_dir]
    assert compress([*argv, "--preprocess", "torchvision", "--labels", str(labels)]) == 0
    capsys.readouterr()
    photos = [str(p) for p in bundled_photos()[:2]]
    argv = [*photos, "--model", str(model), "--device", resident_board.url, "--json"]
    assert infer([*argv, "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == photos
    for r in results:
        assert r["mode"] == "resident" and r["golden_match"], r
        assert len(r["top5"]) == 5
        for entry in r["top5"]:
            assert entry["label"] == TEN_CLASS_LABELS[entry["index"]]
    print_results(results, 64)
    printed = capsys.readouterr().out
    print(printed)
    assert TEN_CLASS_LABELS[results[0]["top5"][0]["index"]] in printed
    assert "equals fpga.spec.golden: yes, bit for bit" in printed

"""ONNX import benchmark (issue 34): bring-your-own-model numbers.

* import + compress time of SqueezeNet v1.1 (the bundled weights exported by torch to ONNX at
  224 px, Caffe preprocessing, 8 bits): ``python -m fpga.compress import-onnx`` end to end,
  onnxruntime reference run included;
* the 10-class SqueezeNet v1.1-style model of the tests (tests/onnx_models.py: 128 px, seeded
  random weights, BatchNorm folded, torchvision preprocessing) at 8 and 6 bits: file sizes;
* agreement with onnxruntime on the calibration photos (the bundled ones): the float graph's
  max |logit diff| and the int8 / compressed top-1 and top-5 agreement, as the import prints.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from fpga.spec.image import PHOTOS_DIR


def _import(onnx_path: Path, out: Path, *extra: str) -> dict:
    from fpga.toolflow.compress import onnx_command
    from fpga.toolflow.compress.cli import ArgumentParser

    parser = ArgumentParser(prog="import-onnx")
    onnx_command.add_arguments(parser)
    argv = [str(onnx_path), "-o", str(out), "--calibration", str(PHOTOS_DIR), *extra]
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        result = onnx_command.import_onnx(parser.parse_args(argv))
    result["wall_s"] = time.perf_counter() - start
    result["printed"] = printed.getvalue()
    return result


def _row(name: str, r: dict) -> dict:
    return {
        "model": name,
        "bytes": r["bytes"],
        "import_s": r["wall_s"],
        "float_max_abs_diff": r["float_max_abs_diff"],
        "float_relative_diff": r["float_relative_diff"],
        "int8_top1": r["int8"]["top1_agreement"],
        "int8_top5": r["int8"]["top5_agreement"],
        "compressed_top1": r["compressed"]["top1_agreement"],
        "compressed_top5": r["compressed"]["top5_agreement"],
        "images": r["int8"]["images"],
    }


def main() -> dict:
    from tests.onnx_models import (
        TEN_CLASS_SIZE,
        export,
        export_variant,
        ten_class_model,
        write_labels,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        v11 = export_variant("v1.1", tmp / "v1.1.onnx", 224)
        rows.append(_row("v1.1 224 px, 8-bit", _import(v11, tmp / "v11.sqz", "--bits", "8")))
        ten = export(ten_class_model(), tmp / "ten.onnx", TEN_CLASS_SIZE)
        labels = write_labels(tmp / "labels.txt")
        for bits in (8, 6):
            result = _import(
                ten,
                tmp / f"ten{bits}.sqz",
                "--preprocess",
                "torchvision",
                "--labels",
                str(labels),
                "--bits",
                str(bits),
            )
            rows.append(_row(f"10-class {TEN_CLASS_SIZE} px, {bits}-bit", result))
    print(
        f"{'model':<24} {'bytes':>10} {'import s':>9} {'float max|d|':>13} {'rel':>9} "
        f"{'int8 t1':>8} {'int8 t5':>8} {'sqz t1':>7} {'sqz t5':>7}"
    )
    for r in rows:
        print(
            f"{r['model']:<24} {r['bytes']:>10,} {r['import_s']:>9.1f} "
            f"{r['float_max_abs_diff']:>13.3g} {r['float_relative_diff']:>9.2g} "
            f"{r['int8_top1']:>8.0%} {r['int8_top5']:>8.0%} {r['compressed_top1']:>7.0%} "
            f"{r['compressed_top5']:>7.0%}"
        )
    print(
        f"agreement with onnxruntime on the {rows[0]['images']} bundled photos (the calibration "
        "set); import s: export excluded, onnxruntime reference run included"
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()

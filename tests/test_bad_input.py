"""No traceback reaches a user from input they control (issue 16).

Every CLI over a table of bad inputs: exit code 2, exactly one line on stderr, starting with
``error:``, no traceback. The table runs each CLI's ``main(argv)`` in this process (the same entry
point ``python -m`` runs; torch is imported once); a few cases also run as real ``python -m``
subprocesses. Plus: images in every mode Pillow opens, the atomic write under a file size limit,
and ``fpga.build --program`` never flashing a build that missed timing or fit.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpga.spec.arch import DATA_DIR
from fpga.spec.image import BACKGROUND_RGB, ImageError, bundled_photos, load_image, preprocess
from fpga.spec.sqz import read_model, write_model
from tests.sqz_samples import shared_weights, tiny_network
from tests.test_graph_fuzz import graph_payload, resign

ROOT = Path(__file__).resolve().parent.parent
PHOTO = str(bundled_photos()[0])


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Good and bad inputs on disk, by name."""
    d = tmp_path_factory.mktemp("bad_input")
    out: dict[str, str] = {"dir": str(d)}
    network = tiny_network(np.random.default_rng(16))
    good = d / "good.sqz"
    write_model(good, network, shared_weights(network), 6)
    out["good.sqz"] = str(good)
    data = good.read_bytes()
    base = json.loads(graph_payload(data))

    def graph_variant(name: str, change) -> None:
        graph = copy.deepcopy(base)
        change(graph)
        (d / name).write_bytes(resign(data, json.dumps(graph).encode()))
        out[name] = str(d / name)

    graph_variant("stride0.sqz", lambda g: g["layers"][2].update(stride=0))
    graph_variant("noinput.sqz", lambda g: g["layers"][2].update(inputs=["nosuch"]))
    graph_variant("size100000.sqz", lambda g: g.update(input_size=100000))
    graph_variant("pad100000.sqz", lambda g: g["layers"][4].update(pad=100000))
    graph_variant("nan_scale.sqz", lambda g: g["layers"][4].update(out_scale=float("nan")))
    graph_variant("unknown_op.sqz", lambda g: g["layers"][3].update(op="softmax"))
    graph_variant("channels.sqz", lambda g: g["layers"][3].update(inputs=["pool1"]))
    (d / "text.sqz").write_bytes(b"not a model at all, just text")
    out["text.sqz"] = str(d / "text.sqz")
    (d / "empty.sqz").write_bytes(b"")
    out["empty.sqz"] = str(d / "empty.sqz")
    (d / "text.jpg").write_text("this is not an image")
    out["text.jpg"] = str(d / "text.jpg")
    (d / "trunc.jpg").write_bytes(Path(PHOTO).read_bytes()[:2000])
    out["trunc.jpg"] = str(d / "trunc.jpg")
    Image.new("F", (40, 40), 0.5).save(d / "float.tif")
    out["float.tif"] = str(d / "float.tif")
    png_header_only(d / "bomb.png", 30000, 30000)
    out["bomb.png"] = str(d / "bomb.png")
    png_header_only(d / "wide.png", 100000, 1)
    out["wide.png"] = str(d / "wide.png")
    (d / "junk.net").write_bytes(b"\x01\x02\x03")
    out["junk.net"] = str(d / "junk.net")
    release = bytearray((DATA_DIR / "compressed_SqueezeNet.net").read_bytes())
    release[4 * 26 + 4 * 7 : 4 * 26 + 4 * 8] = struct.pack("<f", float("nan"))  # conv1 codebook[7]
    (d / "nan.net").write_bytes(bytes(release))
    out["nan.net"] = str(d / "nan.net")
    out["missing"] = str(d / "missing.sqz")
    out["nodir"] = str(d / "no" / "such" / "dir" / "m.sqz")
    return out


P = PHOTO
#: (id, module, argv with {placeholders} from ``files``, a word the message must contain)
CASES = [
    # fpga.toolflow.compress: option values checked before any work; unwritable output
    ("compress-size-5", "fpga.compress", ["--size", "5", "-o", "{dir}/o.sqz"], "--size"),
    ("compress-size-huge", "fpga.compress", ["--size", "100000", "-o", "{dir}/o.sqz"], "--size"),
    ("compress-variant", "fpga.compress", ["--variant", "v9", "-o", "{dir}/o.sqz"], "variant"),
    ("compress-density-0", "fpga.compress", ["--density", "0", "-o", "{dir}/o.sqz"], "--density"),
    ("compress-density-nan", "fpga.compress", ["--density", "nan", "-o", "{dir}/o"], "--density"),
    ("compress-density-2", "fpga.compress", ["--density", "2", "-o", "{dir}/o.sqz"], "--density"),
    (
        "compress-min-agreement-2",
        "fpga.compress",
        ["--min-agreement", "2", "-o", "{dir}/o.sqz"],
        "--min-agreement",
    ),
    ("compress-output-folder", "fpga.compress", ["-o", "{dir}"], "is a folder"),
    ("compress-output-nodir", "fpga.compress", ["-o", "{nodir}"], "does not exist"),
    # fpga.toolflow.compress inspect: files that are not models, graphs that are nonsense
    ("inspect-missing", "fpga.compress", ["inspect", "{missing}"], "cannot read"),
    ("inspect-folder", "fpga.compress", ["inspect", "{dir}"], "cannot read"),
    ("inspect-text", "fpga.compress", ["inspect", "{text.sqz}"], "magic"),
    ("inspect-empty", "fpga.compress", ["inspect", "{empty.sqz}"], "too short"),
    ("inspect-stride0", "fpga.compress", ["inspect", "{stride0.sqz}"], "stride"),
    ("inspect-noinput", "fpga.compress", ["inspect", "{noinput.sqz}"], "nosuch"),
    ("inspect-size100000", "fpga.compress", ["inspect", "{size100000.sqz}"], "input_size"),
    ("inspect-pad100000", "fpga.compress", ["inspect", "{pad100000.sqz}"], "pad"),
    ("inspect-nan", "fpga.compress", ["inspect", "{nan_scale.sqz}"], "'out_scale' is NaN"),
    ("inspect-op", "fpga.compress", ["inspect", "{unknown_op.sqz}"], "softmax"),
    ("inspect-channels", "fpga.compress", ["inspect", "{channels.sqz}"], "channels"),
    # fpga.toolflow.compress import-deepcompression
    ("import-junk", "fpga.compress", ["import-deepcompression", "{junk.net}", "-o", "{dir}/i"], ""),
    (
        "import-nan-codebook",
        "fpga.compress",
        ["import-deepcompression", "{nan.net}", "-o", "{dir}/i.sqz"],
        "conv1: NaN or infinity in its codebook",
    ),
    (
        "import-missing",
        "fpga.compress",
        ["import-deepcompression", "{missing}", "-o", "{dir}/i.sqz"],
        "cannot read",
    ),
    (
        "import-size-5",
        "fpga.compress",
        ["import-deepcompression", "{junk.net}", "--size", "5", "-o", "{dir}/i"],
        "--size",
    ),
    # fpga.toolflow.quant classify / report
    ("classify-missing-image", "fpga.quant", ["classify", "{missing}"], "not found"),
    ("classify-folder-image", "fpga.quant", ["classify", "{dir}"], "folder"),
    ("classify-text-image", "fpga.quant", ["classify", "{text.jpg}"], "cannot read"),
    ("classify-truncated", "fpga.quant", ["classify", "{trunc.jpg}"], "truncated"),
    ("classify-float-tif", "fpga.quant", ["classify", "{float.tif}"], "mode F"),
    ("classify-bomb", "fpga.quant", ["classify", "{bomb.png}"], "bomb"),
    ("classify-wide", "fpga.quant", ["classify", "{wide.png}"], "side"),
    ("classify-size-5", "fpga.quant", ["classify", P, "--size", "5"], "--size"),
    ("classify-size-0", "fpga.quant", ["classify", P, "--size", "0"], "--size"),
    ("classify-size-huge", "fpga.quant", ["classify", P, "--size", "100000"], "--size"),
    ("classify-variant", "fpga.quant", ["classify", P, "--variant", "v9"], "variant"),
    ("classify-model-stride0", "fpga.quant", ["classify", P, "--model", "{stride0.sqz}"], "stride"),
    ("classify-model-size", "fpga.quant", ["classify", P, "--model", "{size100000.sqz}"], "size"),
    ("classify-model-text", "fpga.quant", ["classify", P, "--model", "{text.sqz}"], "magic"),
    ("report-size-0", "fpga.quant", ["report", "--size", "0"], "--size"),
    # fpga.toolflow.model summary
    ("summary-size-5", "fpga.model", ["summary", "--size", "5"], "--size"),
    ("summary-size-huge", "fpga.model", ["summary", "--size", "5000"], "--size"),
    ("summary-variant", "fpga.model", ["summary", "--variant", "v9"], "variant"),
    # host.infer: no board needed, everything fails before or at the device
    ("infer-size-5", "host.infer", [P, "--size", "5", "--device", "loop://"], "--size"),
    ("infer-image", "host.infer", ["{text.jpg}", "--device", "loop://"], "cannot read"),
    ("infer-bomb", "host.infer", ["{bomb.png}", "--device", "loop://"], "bomb"),
    ("infer-model-stride0", "host.infer", [P, "--model", "{stride0.sqz}"], "stride"),
    ("infer-model-noinput", "host.infer", [P, "--model", "{noinput.sqz}"], "nosuch"),
    ("infer-model-missing", "host.infer", [P, "--model", "{missing}"], "cannot read"),
    ("infer-variant", "host.infer", [P, "--variant", "v9"], "variant"),
    (
        "infer-bad-url",
        "host.infer",
        [P, "--model", "{good.sqz}", "--device", "nosuch://x"],
        "",
    ),
    (
        "infer-no-serial-port",
        "host.infer",
        [P, "--model", "{good.sqz}", "--device", "/dev/nonexistent-tty"],
        "",
    ),
    (
        "infer-baud-0",
        "host.infer",
        [P, "--model", "{good.sqz}", "--device", "/dev/nonexistent-tty", "--baud", "0"],
        "baud",
    ),
    # udp:// URLs (host.transport.udp_address): each fails before a datagram is sent
    *[
        (f"infer-udp-{name}", "host.infer", [P, "--model", "{good.sqz}", "--device", url], word)
        for name, url, word in [
            ("port-text", "udp://192.168.1.50:x", "udp://IP:PORT"),
            ("port-range", "udp://192.168.1.50:70000", "udp://IP:PORT"),
            ("port-0", "udp://192.168.1.50:0", "port 0"),
            ("no-host", "udp://:2000", "no host"),
            ("path", "udp://192.168.1.50:2000/x", "udp://IP:PORT"),
            ("ipv6", "udp://[::1]:2000", "IPv4"),
        ]
    ],
    (
        "infer-udp-board-without-ethernet",
        "host.infer",
        [P, "--model", "{good.sqz}", "--device", "udp://", "--board", "ulx3s"],
        "has no Ethernet",
    ),
    (
        "infer-link-with-a-url",  # --link chooses the simulated board's link only
        "host.infer",
        [P, "--model", "{good.sqz}", "--device", "udp://192.168.1.50:2000", "--link", "uart"],
        "--link",
    ),
    ("usage-infer-link", "host.infer", [P, "--link", "pcie"], "--link"),
    # fpga.build.flow
    ("build-board", "fpga.build", ["--board", "nosuch"], "board"),
    ("build-mode", "fpga.build", ["--board", "ulx3s", "--mode", "fast"], "mode"),
    ("build-clock-nan", "fpga.build", ["--board", "ulx3s", "--clock-mhz", "nan"], "clock"),
    ("build-clock-0", "fpga.build", ["--board", "ulx3s", "--clock-mhz", "0"], "clock"),
    ("build-clock-hz", "fpga.build", ["--board", "ulx3s", "--clock-mhz", "42.8571428"], "whole"),
    (
        "build-clock-pll",  # the ECP5 PLL cannot make 48 MHz from 25: the near ones are named
        "fpga.build",
        ["--board", "ulx3s", "--clock-mhz", "48", "--out", "{dir}/b"],
        "achievable near 48",
    ),
    (
        "build-engine-clock-nan",
        "fpga.build",
        ["--board", "ulx3s", "--engine-clock-mhz", "nan"],
        "engine clock",
    ),
    (
        "build-engine-clock-arty",  # the Arty's engine runs on the fabric clock
        "fpga.build",
        ["--board", "arty_a7", "--engine-clock-mhz", "150", "--out", "{dir}/b"],
        "no engine clock of its own",
    ),
    (
        "build-engine-clock-pll",  # 64 MHz beside the 40 MHz fabric clock: not from one PLL
        "fpga.build",
        ["--board", "ulx3s", "--engine-clock-mhz", "64", "--out", "{dir}/b"],
        "40, 40, 64 MHz",
    ),
    ("build-seed-negative", "fpga.build", ["--board", "ulx3s", "--seed", "-1"], "--seed must be"),
    (
        "build-seed-vivado",  # nextpnr's placement seed: the Arty builds with Vivado
        "fpga.build",
        ["--board", "arty_a7", "--seed", "3", "--out", "{dir}/b"],
        "builds with Vivado",
    ),
    ("usage-build-seed", "fpga.build", ["--board", "ulx3s", "--seed", "x"], "invalid int"),
    (
        "build-clock-streamed-arty",  # no PLL in the streamed Arty SoC
        "fpga.build",
        ["--board", "arty_a7", "--mode", "streamed", "--clock-mhz", "50", "--out", "{dir}/b"],
        "oscillator",
    ),
    # usage mistakes (fpga.spec.cli.ArgumentParser: one line, exit 2, not argparse's usage block)
    ("usage-compress-bits", "fpga.compress", ["--bits", "5", "-o", "{dir}/o"], "invalid choice"),
    ("usage-compress-option", "fpga.compress", ["--nosuch", "-o", "{dir}/o"], "--nosuch"),
    ("usage-compress-no-output", "fpga.compress", ["--bits", "6"], "-o/--output"),
    ("usage-inspect-no-file", "fpga.compress", ["inspect"], "file"),
    ("usage-classify-no-images", "fpga.quant", ["classify"], "images"),
    ("usage-classify-size-text", "fpga.quant", ["classify", P, "--size", "big"], "--size"),
    ("usage-quant-command", "fpga.quant", ["nosuch"], "invalid choice"),
    ("usage-summary-size-text", "fpga.model", ["summary", "--size", "1e3"], "--size"),
    ("usage-infer-no-images", "host.infer", [], "images"),
    ("usage-infer-weights-mode", "host.infer", [P, "--weights-mode", "zip"], "--weights-mode"),
]


def fill(argv: list[str], files: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in files.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(case, files, capsys):
    _, module, argv, word = case
    # the module that defines the CLI's main (``python -m fpga.build`` runs a package)
    main = importlib.import_module({"fpga.build": "fpga.build.flow"}.get(module, module))
    try:
        code = main.main(fill(argv, files))
    except SystemExit as exc:  # a usage mistake: the parser exits (as under ``python -m``)
        code = exc.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, (code, out.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err
    assert word in lines[0], lines[0]
    print(f"{case[0]}: exit {code}: {lines[0]}")


@pytest.mark.parametrize(
    "argv",
    [
        ["fpga.compress", "inspect", "{stride0.sqz}"],
        ["fpga.quant", "classify", "{bomb.png}"],
        ["host.infer", P, "--size", "5"],
        ["fpga.model", "summary", "--size", "0"],
    ],
    ids=["inspect", "classify", "infer", "summary"],
)
def test_bad_input_as_a_real_command(argv, files):
    done = subprocess.run(
        [sys.executable, "-m", *fill(argv, files)], capture_output=True, text=True, cwd=ROOT
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")


def test_min_agreement_fails_and_writes_nothing(files, capsys):
    from fpga.toolflow.compress.cli import main

    out = Path(files["dir"]) / "weak.sqz"
    argv = ["--variant", "v1.1", "--size", "64", "--bits", "4", "--density", "0.1"]
    code = main([*argv, "--min-agreement", "1", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and not out.exists(), captured.err
    assert "below --min-agreement" in captured.err and "fidelity vs float" in captured.out


# -- images ---------------------------------------------------------------------------------------
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 64).reshape(64, 256).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(rgb[..., 0].astype(np.int64) - expected).max() <= 1
    assert (rgb == 255).mean() < 0.01  # not saturated


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1", "I;16"])
def test_every_common_mode_loads_as_rgb(tmp_path, mode):
    photo = Image.open(PHOTO).convert("RGB").resize((64, 48))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    else:
        img = photo.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".tif" if mode == "I;16" else ".png"
    img.save(tmp_path / f"x{suffix}")
    rgb = load_image(tmp_path / f"x{suffix}")
    assert rgb.mode == "RGB" and rgb.size == (64, 48)
    assert preprocess(tmp_path / f"x{suffix}", 32).shape == (3, 32, 32)


def test_transparency_is_composited_over_the_mean_colour(tmp_path):
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    img.paste((0, 255, 0, 255), (0, 0, 20, 40))
    img.save(tmp_path / "a.png")
    rgb = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(rgb[0, 0]) == (0, 255, 0) and tuple(rgb[0, 39]) == BACKGROUND_RGB
    # transparent pixels carry no signal after mean subtraction
    assert np.abs(preprocess(tmp_path / "a.png", 32)[:, :, -1]).max() < 1e-3


def test_image_errors_are_image_errors(files):
    for name in ("text.jpg", "trunc.jpg", "float.tif", "bomb.png", "wide.png", "missing", "dir"):
        with pytest.raises(ImageError):
            load_image(files[name])


# -- atomic writes --------------------------------------------------------------------------------
def test_failed_write_leaves_the_previous_model_byte_identical(tmp_path):
    """Under RLIMIT_FSIZE the compressor's write fails: exit 2, one line naming the path, and
    the model that was there is untouched (no temporary file left behind either)."""
    target = tmp_path / "model.sqz"
    network = tiny_network(np.random.default_rng(3))
    write_model(target, network, shared_weights(network), 6)
    before = target.read_bytes()
    limit = 64 * 1024  # the v1.1 model is ~1 MB at 8 bits
    # SIGXFSZ is not ignored here: fpga.spec.files.atomic_write turns the limit into an error itself
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from fpga.toolflow.compress.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["--variant", "v1.1", "--size", "32", "--bits", "8", "-o", str(target)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc write can meet the limit
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        len(lines) == 1 and lines[0].startswith("error: cannot write") and str(target) in lines[0]
    )
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.sqz"]
    read_model(target)


def test_atomic_write_replaces_and_keeps_permissions(tmp_path):
    from fpga.spec.files import WriteError, atomic_write

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o640
    with pytest.raises(WriteError, match="no/such"):
        atomic_write(tmp_path / "no" / "such" / "f.bin", b"x")


# -- fpga.build --program
# -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "timing_met,fits,programmed",
    [(False, True, False), (True, False, False), (None, False, False), (True, True, True)],
)
def test_program_runs_only_after_timing_and_fit_passed(
    monkeypatch, tmp_path, timing_met, fits, programmed
):
    from fpga.build import flow as build

    calls = []
    result = {
        "board": "ulx3s",
        "part": "LFE5U-85F",
        "config": next(iter(build.CONFIGS)),
        "note": "test",
        "build_dir": str(tmp_path),
        "utilization": {},
        "fmax_mhz": 40.0,
        "target_mhz": 50.0,
        "engine_mhz": 60.0,
        "timing_met": timing_met,
        "fits": fits,
        "bitstream": str(tmp_path / "top.bit"),
    }
    monkeypatch.setattr(build, "build", lambda *a, **k: dict(result))
    monkeypatch.setattr(build, "predicted_images_per_s", lambda *a, **k: {})
    monkeypatch.setattr(build, "program_board", lambda *a, **k: calls.append(a))
    code = build.main(["--board", "ulx3s", "--program", "--json", "--out", str(tmp_path)])
    assert (len(calls) == 1) == programmed
    assert code == (0 if programmed else 1)

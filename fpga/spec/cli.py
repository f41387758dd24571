"""The argument parser of the project's CLIs: a usage mistake is one ``error:`` line, exit 2.

argparse's own ``error()`` prints the whole usage block and ``prog: error: ...``; here a mistake
in the arguments reads like every other error a user can cause (:func:`fpga.spec.errors.run_cli`):
one line naming the problem and where the help is. ``--help`` still prints the full usage.
"""

from __future__ import annotations

import argparse
import sys

from fpga.spec.errors import USAGE_EXIT


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error:`` line and exit code 2.

    Sub-command parsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def error(self, message: str):
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)

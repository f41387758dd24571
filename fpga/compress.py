"""``python -m fpga.compress``: the CLI of :mod:`fpga.toolflow.compress.cli` under the name it has
always had."""

import sys

from fpga.toolflow.compress.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m fpga.model``: the CLI of :mod:`fpga.toolflow.model` under the name it has always
had."""

import sys

from fpga.toolflow.model import main

if __name__ == "__main__":
    sys.exit(main())

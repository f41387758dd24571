"""``python -m fpga.quant``: the CLI of :mod:`fpga.toolflow.quant` under the name it has always
had."""

import sys

from fpga.toolflow.quant import main

if __name__ == "__main__":
    sys.exit(main())

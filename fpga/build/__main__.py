"""``python -m fpga.build --board NAME``: see :mod:`fpga.build.flow`."""

import sys

from fpga.build.flow import main

sys.exit(main())

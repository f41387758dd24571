import sys

from sim.board import main

sys.exit(main())

"""The UART PHY and the SoC's UART link, bit-level against cocotbext-uart (independent model),
at the boards' rates and fabric clocks (fpga.spec.boards): 12 Mbaud from 100 MHz on the Arty A7 (8
1/3 cycles a bit, the fractional bit timer) and 3 Mbaud from the ULX3S's 40 MHz PLL clock
(13 1/3)."""

import json

import pytest

from fpga.spec.boards import get_board
from fpga.spec.config import SMALL_CONFIG
from hw.soc.top import SoC
from sim import runner

pytestmark = pytest.mark.skipif(
    not runner.simulator_available(), reason=f"{runner.simulator()} is not installed"
)


@pytest.mark.parametrize(
    "clock_mhz,baud",
    [(get_board(name).clock_mhz, get_board(name).baud) for name in ("arty_a7", "ulx3s")],
)
def test_soc_over_uart_against_cocotbext_uart(clock_mhz, baud):
    config = SMALL_CONFIG.replace(clock_mhz=clock_mhz)  # the link is what is tested: small engine
    soc = SoC(config, link="uart", baud=baud)
    built, build_dir = runner.build(soc, "soc_uart")
    env = {"UART_BAUD": str(baud), "CONFIG": json.dumps(config.to_dict())}
    try:
        runner.run(built, build_dir, "soc_uart", "sim.uart_bench", env=env)
    except SystemExit as exc:
        raise AssertionError("UART bench failed (see the cocotb log above)") from exc

"""The UART PHY and the SoC's UART link, bit-level against cocotbext-uart (independent model),
at the boards' rates: 12 Mbaud from 100 MHz (8 1/3 cycles a bit, the fractional bit timer) and
3 Mbaud from 25 MHz (the ULX3S)."""

import json

import pytest

from fpga.config import SMALL_CONFIG
from hw.top import SoC
from sim import runner

pytestmark = pytest.mark.skipif(
    not runner.simulator_available(), reason=f"{runner.simulator()} is not installed"
)


@pytest.mark.parametrize("clock_mhz,baud", [(100.0, 12_000_000), (25.0, 3_000_000)])
def test_soc_over_uart_against_cocotbext_uart(clock_mhz, baud):
    config = SMALL_CONFIG.replace(clock_mhz=clock_mhz)  # the link is what is tested: small engine
    soc = SoC(config, link="uart", baud=baud)
    built, build_dir = runner.build(soc, "soc_uart")
    env = {"UART_BAUD": str(baud), "CONFIG": json.dumps(config.to_dict())}
    try:
        runner.run(built, build_dir, "soc_uart", "sim.uart_bench", env=env)
    except SystemExit as exc:
        raise AssertionError("UART bench failed (see the cocotb log above)") from exc

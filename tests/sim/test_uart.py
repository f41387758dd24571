"""The UART PHY and the SoC's UART link, bit-level against cocotbext-uart (independent model)."""

import pytest

from fpga.config import DEFAULT_CONFIG
from hw.top import SoC
from sim import runner

pytestmark = pytest.mark.skipif(
    not runner.simulator_available(), reason=f"{runner.simulator()} is not installed"
)


@pytest.mark.parametrize("baud", [12_500_000, 3_125_000])
def test_soc_over_uart_against_cocotbext_uart(baud):
    config = DEFAULT_CONFIG
    clock_hz = int(config.clock_mhz * 1e6)
    assert clock_hz % baud == 0
    soc = SoC(config, link="uart", baud=baud)
    built, build_dir = runner.build(soc, "soc_uart")
    try:
        runner.run(built, build_dir, "soc_uart", "sim.uart_bench", env={"UART_BAUD": str(baud)})
    except SystemExit as exc:
        raise AssertionError("UART bench failed (see the cocotb log above)") from exc

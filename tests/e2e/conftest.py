import pytest

from host.simulated import BoardProcess
from sim import runner


@pytest.fixture(scope="session")
def board_binary():
    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from sim.board import build

    return build()


@pytest.fixture
def board(board_binary):
    """A fresh simulated board (the default configuration) per test, from the one build."""
    with BoardProcess(board_binary) as simulated:
        yield simulated


@pytest.fixture(scope="session")
def resident_board_binary():
    """The simulated board with its DRAM (LiteDRAM controller + model) for resident mode."""
    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from sim.board import build

    return build(memory=True)


@pytest.fixture
def resident_board(resident_board_binary):
    """A fresh simulated board with DRAM per test (nothing loaded), from the one build."""
    with BoardProcess(resident_board_binary) as simulated:
        yield simulated

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

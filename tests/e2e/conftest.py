import pytest

from sim import runner


@pytest.fixture(scope="session")
def board_binary():
    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from sim.board import build

    return build()


@pytest.fixture
def board(board_binary):
    from sim.board import SimulatedBoard

    with SimulatedBoard() as simulated:
        yield simulated

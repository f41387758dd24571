"""The host runtime install: ``host.infer --model M.sqz --device URL`` without torch or Amaranth.

The simulated board is started by the test (it needs the gateware); the host CLI runs in a
subprocess in which importing torch, amaranth, hw or cocotb fails, as on a lab PC that has only
``pip install .`` (numpy, Pillow, pyserial, tqdm).
"""

import json

from fpga.spec.image import bundled_photos
from fpga.spec.sqz import write_model
from fpga.toolflow.compress import compress_network
from tests.test_layers import HOST_ONLY_BLOCKED, run_without


def test_host_cli_classifies_on_the_simulated_board_without_torch(board, tmp_path):
    model = tmp_path / "small.sqz"
    network, shared, _ = compress_network("v1.1", 6, size=64)
    write_model(model, network, shared, 6)
    photos = [str(p) for p in bundled_photos()[:2]]
    argv = [
        "host.infer",
        *photos,
        "--model",
        str(model),
        "--device",
        board.url,
        "--weights-mode",
        "huffman",
        "--json",
        "--no-progress",
    ]
    done = run_without(
        HOST_ONLY_BLOCKED,
        f"import sys; sys.argv = {argv!r}",
        "import runpy; runpy.run_module('host.infer', run_name='__main__')",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["image"] for r in results] == photos
    assert all(r["golden_match"] for r in results)
    assert all(len(r["top5"]) == 5 for r in results)

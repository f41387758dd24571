"""bench/resident.py's bookkeeping (no board): one row from classify_on_device's resident
results, the model load counted once, the streamed figures read from bench/e2e's results."""

import json

from bench import resident
from host.driver import ModelLoad


def _result(cycles, loaded, load_link_bytes, wall):
    return {
        "cycles": cycles,
        "engine_alone_cycles": 1_000_000,
        "model_cycles": 1_111_000,
        "engine_share": 0.5,
        "dma_wait_share": 0.1,
        "other_share": 0.4,
        "link_bytes": 1050,
        "link_frames": 8,
        "minimum_link_bytes": 1000,
        "clock_hz": 100_000_000,
        "link_kind": "uart",
        "link_bps": 12_000_000,
        "predicted_images_per_s": 50.0,
        "wall_s": wall,
        "golden_match": True,
        "top5": [{"label": "tabby"}],
        "model_load": {
            "loaded": loaded,
            "link_bytes": load_link_bytes,
            "bytes": 5000,
            "fingerprint": "ab",
        },
    }


def test_summarize_one_load_two_images():
    results = [_result(1_000_000, True, 6000, 30.0), _result(1_200_000, False, 0, 40.0)]
    results[0]["host_cycles"] = 100_000  # serving the link: not in the model's timeline
    row = resident.summarize("v1.0", 227, "huffman", results, [(ModelLoad(True, 6000), 2.5)])
    assert row["model_load"] == {
        "calls": 1,
        "writes": 1,
        "link_bytes": 6000,
        "bytes": 5000,
        "wall_s": 2.5,
        "fingerprint": "ab",
        "predicted_link_s": 6000 / 1.2e6,
    }
    assert not row["reloaded_after_first"]
    assert row["device_cycles"] == 1_100_000
    assert row["device_over_engine"] == 1.1
    assert row["model_cycles"] == 1_111_000 and row["model_over_device"] == 1_111_000 / 1_050_000
    assert row["link_ratio"] == 1.05
    assert row["compute_bound_images_per_s"] == 100e6 / 1.1e6
    assert row["wall_s_per_image"] == 35.0 and row["wall_goal_s"] == 40.0
    assert row["golden_match"]


def test_summarize_flags_a_second_load():
    results = [_result(1, True, 6000, 1.0), _result(1, True, 6000, 1.0)]
    loads = [(ModelLoad(True, 6000), 1.0), (ModelLoad(True, 6000), 1.0)]
    assert resident.summarize("v1.1", 224, "indices", results, loads)["reloaded_after_first"]


def test_streamed_figures(tmp_path):
    assert resident.streamed_figures(tmp_path / "missing.json") is None
    saved = tmp_path / "e2e.json"
    row = {"variant": "v1.0", "weights_mode": "huffman", "uart_12mbaud_images_per_s": 0.05}
    saved.write_text(json.dumps({"rows": [row]}))
    assert resident.streamed_figures(saved) == {("v1.0", "huffman"): 0.05}

"""Batch inference over 1, 2 and 4 simulated boards with Ray (host.batch), and the images/s
predicted for N real Arty A7 boards.

Measured: v1.1 at 64 (reduced size, as the tests), 8 images, resident mode, each board a
simulated board process (Verilator, one core each while it runs) driven by its own Ray actor.
The model load (~20 s a board) is reported apart; images/s counts the results that arrive after
the last board was ready (and, for comparison, from the first image handed out: the later
boards' loads then compete with the first images). The machine's load average is printed
with each row: other work on the 2 cores shows in these numbers.

Predicted for real boards: the per-board figure is the resident bench's
(``python -m bench resident``, saved in bench/results/resident.json: host.classify's
sequential images/s of the simulated board's measured cycles and link bytes at the Arty A7's
100 MHz over its 12 Mbaud UART, since host.batch gives a board one image at a time; not re-run
here). Each board has its own UART, so N boards
give N times that, until the host's own per-image work (preprocessing and the fpga.spec.golden
check, on the host's cores) is the limit.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from fpga.spec import golden
from fpga.spec.image import bundled_photos, preprocess
from fpga.toolflow import quant
from host.batch import DeviceSpec, classify_batch
from host.simulated import build_binary

VARIANT, SIZE, IMAGES = "v1.1", 64, 10
BOARD_COUNTS = (1, 2, 4)
RESIDENT_RESULTS = Path(__file__).parent / "results" / "resident.json"
ARTY_COUNTS = (1, 2, 4, 8, 16)
REPS = 5


def _cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) ``pid`` has used, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """At every result (in input order), the CPU time the board processes and the actors have
    used so far; :meth:`per_image` is the CPU between the first and the last sample over the
    images in between (so the model loads before the first result are left out)."""

    def __init__(self):
        self.samples: list[tuple[int, float, float]] = []

    def __call__(self, result, bar, boards) -> None:
        used = {
            role: sum(_cpu_s(b.info.get(role)) or 0.0 for b in boards)
            for role in ("board_pid", "actor_pid")
        }
        self.samples.append((len(self.samples) + 1, used["board_pid"], used["actor_pid"]))

    def per_image(self) -> tuple[float, float]:
        (n0, board0, actor0), (n1, board1, actor1) = self.samples[0], self.samples[-1]
        return (board1 - board0) / (n1 - n0), (actor1 - actor0) / (n1 - n0)


def _simulated(binary) -> list[dict]:
    network = quant.quantize_network(VARIANT, size=SIZE)
    photos = bundled_photos()
    images = [photos[i % len(photos)] for i in range(IMAGES)]
    options = {"weights_mode": "indices", "mode": "resident", "baud": None}
    rows = []
    for count in BOARD_COUNTS:
        devices = [DeviceSpec(f"sim{i}", binary=str(binary)) for i in range(count)]
        sampler = CpuSampler()
        report = classify_batch(
            images, devices, network, None, options, progress=False, on_result=sampler
        )
        done = [r for r in report.results if "error" not in r]
        busy = report.wall_s - report.first_image_s
        # the rate once every board holds the model: results after the last board was ready
        after = sorted(t for t in report.finished_s if t is not None and t > report.ready_s)
        rows.append(
            {
                "boards": count,
                "images": len(done),
                "wall_s": report.wall_s,
                "all_ready_s": report.ready_s,
                "first_image_s": report.first_image_s,
                "images_per_s": len(done) / busy,
                "images_after_all_ready": len(after),
                "images_per_s_all_ready": len(after) / (after[-1] - report.ready_s)
                if after
                else 0.0,
                "load_average": os.getloadavg(),
                # CPU seconds per image (after the first result): the boards' simulation, the
                # actors' host work; with one board this is one board's cost per image
                "board_cpu_s_per_image": sampler.per_image()[0],
                "actor_cpu_s_per_image": sampler.per_image()[1],
                "per_board": {b.spec.name: b.done for b in report.boards},
                "load_s": {b.spec.name: b.info.get("load_s") for b in report.boards},
                "all_bit_exact": all(r["golden_match"] for r in done) and len(done) == IMAGES,
                "link_ratio": done[0]["link_ratio"],
            }
        )
        r = rows[-1]
        print(
            f"{count} board(s): {r['images_per_s_all_ready']:.3f} images/s with every board "
            f"ready ({r['images_after_all_ready']} images; {r['images_per_s']:.3f} from the first "
            f"image on), {r['images']} images, wall {r['wall_s']:.0f} s, boards ready after "
            f"{r['all_ready_s']:.0f} s, per board {r['per_board']}, bit-exact "
            f"{r['all_bit_exact']}, load average {r['load_average'][0]:.1f}; CPU per image: "
            f"boards {r['board_cpu_s_per_image']:.1f} s, actors {r['actor_cpu_s_per_image']:.1f} s",
            flush=True,
        )
    return rows


def _host_work(variant: str, size: int) -> dict:
    """The host's own seconds per image for ``variant`` at ``size``: preprocessing and the
    fpga.spec.golden check (every image; the compile and the model load happen once per board,
    host.classify.Session)."""
    network = quant.quantize_network(variant, size=size)
    host = []
    for i in range(REPS):
        start = time.perf_counter()
        x = network.quantize_input(preprocess(bundled_photos()[i % 3], size))
        golden.run_network(network, x, keep=False)
        host.append(time.perf_counter() - start)
    return {"host_s": statistics.median(host)}


def _arty() -> list[dict] | None:
    """Images/s for N Arty A7 boards: the per-board figure of ``python -m bench resident``
    (bench/results/resident.json: host.classify's predicted images/s of the simulated board's
    measured cycles and link bytes, *sequential*: host.batch hands each board one image at a
    time, so its link and compute do not overlap) times N, capped by the host's per-image
    work."""
    if not RESIDENT_RESULTS.exists():
        return None
    cores = os.cpu_count() or 1
    rows, work = [], {}
    for r in json.loads(RESIDENT_RESULTS.read_text())["rows"]:
        key = (r["variant"], r["size"])
        work[key] = work.get(key) or _host_work(*key)
        host_limit = cores / work[key]["host_s"]
        # one image at a time per board (older results have only the sequential figure)
        per_board = r.get("predicted_sequential_images_per_s", r["predicted_images_per_s"])
        rows.append(
            {
                "variant": r["variant"],
                "size": r["size"],
                "weights_mode": r["weights_mode"],
                "per_board_images_per_s": per_board,
                "host_s_per_image": work[key]["host_s"],
                "host_cores": cores,
                "host_limit_images_per_s": host_limit,
                "predicted_images_per_s": {n: min(n * per_board, host_limit) for n in ARTY_COUNTS},
            }
        )
    return rows


def main() -> dict:
    binary = build_binary()
    rows = _simulated(binary)
    base = rows[0]["images_per_s_all_ready"]
    for r in rows:
        r["speedup"] = r["images_per_s_all_ready"] / base
    cores = os.cpu_count() or 1
    # a simulated board is one single-threaded process, and its actor works between its runs:
    # k boards keep at most min(k, cores) cores busy
    cpu = rows[0]["board_cpu_s_per_image"] + rows[0]["actor_cpu_s_per_image"]
    for r in rows:
        r["ideal_images_per_s"] = min(r["boards"], cores) / cpu
    print(
        "speed-up over one board: "
        + ", ".join(f"{r['boards']}: {r['speedup']:.2f}x" for r in rows)
        + f"; with {cores} cores to itself the batch would reach "
        + ", ".join(f"{r['ideal_images_per_s']:.3f}" for r in rows)
        + f" images/s ({cpu:.1f} CPU seconds per image on one board). It stops scaling at "
        + f"{cores} boards: each simulated board is one Verilator process on one core, and "
        "more boards only share the cores (the load average shows what else ran)."
    )
    arty = _arty()
    if arty is None:
        print(
            "Arty A7 prediction: no per-board figure (bench/results/resident.json; run "
            "`python -m bench resident` first)"
        )
    for a in arty or []:
        print(
            f"{a['variant']}@{a['size']} ({a['weights_mode']}) on Arty A7 boards: "
            f"{a['per_board_images_per_s']:.2f} images/s per board (bench resident); host work "
            f"{a['host_s_per_image']:.2f} s an image -> at most "
            f"{a['host_limit_images_per_s']:.0f} images/s on {a['host_cores']} cores; N boards: "
            + ", ".join(f"{n}: {v:.1f}" for n, v in a["predicted_images_per_s"].items())
        )
    return {"simulated": rows, "arty": arty}

"""Batch inference over 1, 2 and 4 simulated boards with Ray (host.batch), each board
streaming its images and, over 1 and 2 boards, one image at a time (the same images); and the
images/s predicted for N real Arty A7 boards.

Measured: v1.1 at 64 (reduced size, as the tests), 24 images, resident mode, each board a
simulated board process (Verilator, one core each while it runs) driven by its own Ray actor.
The model load (~20 s a board) is reported apart; images/s counts the results that arrive after
the last board was ready (and, for comparison, from the first image handed out: the later
boards' loads then compete with the first images). The machine's load average is printed
with each row: other work on the 2 cores shows in these numbers. Streaming: a board computes
one image while the next one's input is written and the last one's logits are read
(``Device.run_resident_many`` in the actor; the device's ``host_cycles`` count that link work
inside its runs); one image at a time (``classify_batch(stream=False)``): write, run, read.

Predicted for real boards: the per-board figure is the resident bench's
(``python -m bench resident``, saved in bench/results/resident.json: host.classify's
images/s of the simulated board's measured cycles and link bytes at the Arty A7's 100 MHz over
its 12 Mbaud UART, link and compute overlapped as a streaming board runs them, and sequential
for one image at a time; not re-run here). Each board has its own UART, so N boards give N
times that, until the host's own per-image work (preprocessing and the fpga.spec.golden check,
on the host's cores) is the limit.
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

VARIANT, SIZE, IMAGES = "v1.1", 64, 24
#: (boards, streaming): one image at a time over 1 and 2 boards against streaming
RUNS = ((1, True), (1, False), (2, True), (2, False), (4, True))
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
    for count, stream in RUNS:
        devices = [DeviceSpec(f"sim{i}", binary=str(binary)) for i in range(count)]
        sampler = CpuSampler()
        report = classify_batch(
            images,
            devices,
            network,
            None,
            options,
            progress=False,
            on_result=sampler,
            stream=stream,
        )
        done = [r for r in report.results if "error" not in r]
        busy = report.wall_s - report.first_image_s
        # the rate once every board holds the model: results after the last board was ready
        after = sorted(t for t in report.finished_s if t is not None and t > report.ready_s)
        rows.append(
            {
                "boards": count,
                "stream": stream,
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
                # runs with link traffic served inside them (the device's host_cycles): all
                # but a board's last-of-a-stream when streaming, none one image at a time
                "runs_with_link_work": sum(r["host_cycles"] > 0 for r in done),
                "device_cycles_per_image": statistics.mean(r["cycles"] for r in done),
            }
        )
        r = rows[-1]
        how = "streaming" if stream else "one image at a time"
        print(
            f"{count} board(s), {how}: {r['images_per_s_all_ready']:.3f} images/s with every board "
            f"ready ({r['images_after_all_ready']} images; {r['images_per_s']:.3f} from the first "
            f"image on), {r['images']} images, wall {r['wall_s']:.0f} s, boards ready after "
            f"{r['all_ready_s']:.0f} s, per board {r['per_board']}, bit-exact "
            f"{r['all_bit_exact']}, load average {r['load_average'][0]:.1f}; CPU per image: "
            f"boards {r['board_cpu_s_per_image']:.1f} s, actors "
            f"{r['actor_cpu_s_per_image']:.1f} s; runs with link work inside "
            f"{r['runs_with_link_work']}/{r['images']}",
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
    measured cycles and link bytes, link and compute overlapped: a streaming board; and
    sequential: one image at a time) times N, capped by the host's per-image work."""
    if not RESIDENT_RESULTS.exists():
        return None
    cores = os.cpu_count() or 1
    rows, work = [], {}
    for r in json.loads(RESIDENT_RESULTS.read_text())["rows"]:
        key = (r["variant"], r["size"])
        work[key] = work.get(key) or _host_work(*key)
        host_limit = cores / work[key]["host_s"]
        # a board streams (link and compute overlapped); one image at a time is sequential
        per_board = r["predicted_images_per_s"]
        one = r.get("predicted_sequential_images_per_s", per_board)
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
                "one_at_a_time_per_board_images_per_s": one,
                "one_at_a_time_images_per_s": {n: min(n * one, host_limit) for n in ARTY_COUNTS},
            }
        )
    return rows


def main() -> dict:
    binary = build_binary()
    rows = _simulated(binary)
    base = rows[0]["images_per_s_all_ready"]  # one board, streaming
    for r in rows:
        r["speedup"] = r["images_per_s_all_ready"] / base
    streaming = {r["boards"]: r for r in rows if r["stream"]}
    for r in rows:
        if not r["stream"]:
            fed = streaming[r["boards"]]["images_per_s_all_ready"]
            r["streaming_gain"] = fed / r["images_per_s_all_ready"]
            print(
                f"{r['boards']} board(s): streaming {fed:.3f} images/s, one image at a time "
                f"{r['images_per_s_all_ready']:.3f} ({r['streaming_gain']:.2f}x)"
            )
    cores = os.cpu_count() or 1
    # a simulated board is one single-threaded process, and its actor works between its runs:
    # k boards keep at most min(k, cores) cores busy
    cpu = rows[0]["board_cpu_s_per_image"] + rows[0]["actor_cpu_s_per_image"]
    for r in rows:
        r["ideal_images_per_s"] = min(r["boards"], cores) / cpu
    print(
        "speed-up over one board: "
        + ", ".join(f"{r['boards']}: {r['speedup']:.2f}x" for r in rows if r["stream"])
        + f"; with {cores} cores to itself the batch would reach "
        + ", ".join(f"{r['ideal_images_per_s']:.3f}" for r in rows if r["stream"])
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
            f"{a['per_board_images_per_s']:.2f} images/s per board streaming (one image at a "
            f"time {a['one_at_a_time_per_board_images_per_s']:.2f}; bench resident); host work "
            f"{a['host_s_per_image']:.2f} s an image -> at most "
            f"{a['host_limit_images_per_s']:.0f} images/s on {a['host_cores']} cores; N boards: "
            + ", ".join(f"{n}: {v:.1f}" for n, v in a["predicted_images_per_s"].items())
        )
    return {"simulated": rows, "arty": arty}

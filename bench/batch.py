"""Batch inference over 1, 2 and 4 simulated boards with Ray (host.batch), and the images/s
predicted for N real Arty A7 boards.

Measured: v1.1 at 64 (reduced size, as the tests), 8 images, resident mode, each board a
simulated board process (Verilator, one core each while it runs) driven by its own Ray actor.
The model load (~20 s a board) is reported apart; images/s counts the results that arrive after
the last board was ready (and, for comparison, from the first image handed out: the later
boards' loads then compete with the first images). The machine's load average is printed
with each row: other work on the 2 cores shows in these numbers.

Predicted for real boards: the per-board figure is host.classify.predicted_images_per_s (the
resident issue's: compute, then the UART transfer, no overlap) for v1.0 at 227, from the
sequencer's cycle estimate (fpga.resident.sequential_cycles, within 0.5 % of the simulated
board's count) and the per-image link bytes (input + logits, times the framing overhead
measured here). Each board has its own UART, so N boards give N times that, until the host's
own per-image work (preprocessing and the fpga.golden check, on the host's cores) is the limit.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from fpga import golden, quant
from fpga.boards import get_board
from fpga.compile import compile_network
from fpga.image import bundled_photos, preprocess
from fpga.resident import compile_resident, sequential_cycles
from host.batch import DeviceSpec, classify_batch
from host.classify import predicted_images_per_s
from host.infer import DEFAULT_BOARD
from host.simulated import build_binary

VARIANT, SIZE, IMAGES = "v1.1", 64, 10
BOARD_COUNTS = (1, 2, 4)
FULL = ("v1.0", 227)
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


def _arty(link_ratio: float) -> dict:
    """Per-board images/s of v1.0 at 227 on an Arty A7 (100 MHz, its UART) and the host's limit."""
    variant, size = FULL
    network = quant.quantize_network(variant, size=size)
    board = get_board(DEFAULT_BOARD)
    config = board.config
    dram = board.memory.size_bytes
    compile_s = []
    for _ in range(REPS):  # what classify_one redoes per image today
        start = time.perf_counter()
        program = compile_network(network, config)
        image = compile_resident(program, dram_size=dram, input_size=network.input_size)
        compile_s.append(time.perf_counter() - start)
    cycles = sequential_cycles(image)["total"]
    link_bytes = image.link_bytes_per_image() * link_ratio
    per_board = predicted_images_per_s(cycles, config.clock_mhz * 1e6, link_bytes, board.baud)
    host = []
    for i in range(REPS):
        start = time.perf_counter()
        x = network.quantize_input(preprocess(bundled_photos()[i % 3], size))
        golden.run_network(network, x, keep=False)
        host.append(time.perf_counter() - start)
    host_s, compile_s = statistics.median(host), statistics.median(compile_s)
    cores = os.cpu_count() or 1
    return {
        "variant": variant,
        "size": size,
        "cycles": cycles,
        "clock_mhz": config.clock_mhz,
        "baud": board.baud,
        "link_bytes": link_bytes,
        "per_board_images_per_s": per_board,
        "host_s_per_image": host_s,
        "host_recompile_s_per_image": compile_s,
        "host_cores": cores,
        "host_limit_images_per_s": cores / host_s,
        "host_limit_with_recompile_images_per_s": cores / (host_s + compile_s),
    }


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
    arty = _arty(rows[0]["link_ratio"])
    predicted = {
        n: min(n * arty["per_board_images_per_s"], arty["host_limit_images_per_s"])
        for n in ARTY_COUNTS
    }
    print(
        f"{arty['variant']}@{arty['size']} on a real Arty A7 ({arty['clock_mhz']:.0f} MHz, "
        f"{arty['baud'] / 1e6:g} Mbaud UART): {arty['cycles']:,} cycles + "
        f"{arty['link_bytes']:,.0f} link bytes per image -> "
        f"{arty['per_board_images_per_s']:.2f} images/s per board "
        "(host.classify.predicted_images_per_s)"
    )
    print(
        f"host work per image (preprocess + fpga.golden check, median of {REPS}): "
        f"{arty['host_s_per_image']:.2f} s "
        f"-> at most {arty['host_limit_images_per_s']:.1f} images/s on {arty['host_cores']} cores"
        f" (today's per-image recompile adds {arty['host_recompile_s_per_image']:.2f} s: "
        f"{arty['host_limit_with_recompile_images_per_s']:.1f} images/s)"
    )
    print(
        "predicted images/s for N Arty boards: "
        + ", ".join(f"{n}: {v:.1f}" for n, v in predicted.items())
    )
    return {"simulated": rows, "arty": arty, "arty_predicted_images_per_s": predicted}

"""Resident mode (issue #12) on one simulated board with DRAM: the model loaded once, then two
images back to back, through the host path ``python -m host.infer`` takes
(``host.classify.classify_on_device(..., mode="resident")``, ``host.driver.Device``).

Per network and weights mode: the model load (link bytes, wall seconds), and per image the
device cycles, the engine-only cycles (``Program.predicted_cycles()`` summed, the streamed
engine's cost model, which host.classify reports as ``engine_alone_cycles``; it leaves the
Huffman decode out, so both weights modes get the same figure) and their ratio, the device's
cycle split (engine / DMA wait / other), the link bytes against the minimum (input + logits),
the cycles the device spent serving the link during each run (``host_cycles``), the images/s
predicted for the Arty A7 at its clock over its 12 Mbaud UART (or the link the board reports:
``host.classify.prediction_link``) by ``host.classify.predicted_images_per_s`` twice: with the link
and compute overlapped (the period is the longer of the two, what ``Device.run_resident_many``
does; the images/s goals compare against it) and sequential (compute, then transfer), the
compute-bound images/s, the simulator's wall time per image and whether the class sums equal
``fpga.spec.golden``. The images go through one overlapped stream. The goals are printed next to
the measured values, never asserted.

Streamed mode's images/s are taken from ``bench/results/e2e.json`` when that file exists
(``python -m bench e2e``; it is not re-run here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fpga.spec.image import bundled_photos
from fpga.spec.protocol import LinkKind, LinkRate
from fpga.toolflow import quant
from host.classify import classify_on_device, predicted_images_per_s, result_link
from host.driver import Device
from host.simulated import BoardProcess, build_binary

NETWORKS = (("v1.0", 227), ("v1.1", 224))
WEIGHTS_MODES = ("indices", "huffman")
IMAGES = 2
#: goals printed beside the measurements: issue 32's device/engine on the 8 x 8 board (1.10 on
#: the A7-100T's 16 x 16, predicted below), issue 12's others
GOAL_DEVICE_OVER_ENGINE = 1.05
GOAL_DEVICE_OVER_ENGINE_WIDE = 1.10
GOAL_LINK_RATIO = 1.05
GOAL_WALL_S = {("v1.0", 227): 40.0}
#: images/s on the Arty A7 over its UART, link and compute overlapped
GOAL_IMAGES_PER_S = {"v1.0": 4.0, "v1.1": 6.0}
E2E_RESULTS = Path(__file__).parent / "results" / "e2e.json"


class TimedLoads:
    """Wraps ``device.load_model`` to record each call's :class:`host.driver.ModelLoad` and its
    wall seconds (``classify_on_device`` loads the model itself and does not time it)."""

    def __init__(self, device: Device):
        self.calls: list[tuple[object, float]] = []
        self._load = device.load_model
        device.load_model = self

    def __call__(self, image, force: bool = False):
        start = time.perf_counter()
        load = self._load(image, force)
        self.calls.append((load, time.perf_counter() - start))
        return load


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def summarize(variant, size, weights_mode, results, loads) -> dict:
    """One row from ``classify_on_device``'s resident results (one per image) and the load
    calls :class:`TimedLoads` saw during them."""
    written = [(load, wall) for load, wall in loads if load.loaded]
    cycles = _mean(r["cycles"] for r in results)
    link = _mean(r["link_bytes"] for r in results)
    first = results[0]
    clock_hz = first["clock_hz"]
    frames = _mean(r["link_frames"] for r in results)
    rate = result_link(first)
    # the measured mean cycles and link bytes and frames per image at the Arty's clock and link
    figures = (cycles, clock_hz, rate.seconds(link, frames))
    # host.classify's engine_alone_cycles: Program.predicted_cycles() summed
    engine_cycles = first["engine_alone_cycles"]
    return {
        "variant": variant,
        "size": size,
        "weights_mode": weights_mode,
        "images": len(results),
        "model_load": {
            "calls": len(loads),
            "writes": len(written),
            "link_bytes": sum(load.link_bytes for load, _ in loads),
            "bytes": first["model_load"]["bytes"],
            "wall_s": sum(wall for _, wall in loads),
            "fingerprint": first["model_load"]["fingerprint"],
            # the one load over the same link (no overlap with anything)
            "predicted_link_s": rate.seconds(
                sum(load.link_bytes for load, _ in loads),
                sum(load.link_frames for load, _ in loads),
            ),
        },
        # only the first image may come with a model load: the second must find it resident
        "reloaded_after_first": any(r["model_load"]["loaded"] for r in results[1:])
        or len(written) > 1,
        "device_cycles": cycles,
        "device_cycles_each": [r["cycles"] for r in results],
        "engine_only_cycles": engine_cycles,
        "device_over_engine": cycles / engine_cycles,
        # the cost model's timeline (fpga.compiler.traffic.device_cycles) against the device's
        # cycles without those it spent serving the link (the next input's write), which the
        # model leaves out
        "model_cycles": first["model_cycles"],
        "model_over_device": first["model_cycles"]
        / _mean(r["cycles"] - (r.get("host_cycles") or 0) for r in results),
        "engine_share": _mean(r["engine_share"] for r in results),
        "dma_wait_share": _mean(r["dma_wait_share"] for r in results),
        "other_share": _mean(r["other_share"] for r in results),
        "link_bytes_per_image": link,
        "link_frames_per_image": frames,
        "link_bytes_each": [r["link_bytes"] for r in results],
        "minimum_link_bytes": first["minimum_link_bytes"],
        "link_ratio": link / first["minimum_link_bytes"],
        "clock_hz": clock_hz,
        "link_kind": first["link_kind"],
        "link_bps": first["link_bps"],
        "host_cycles_each": [r.get("host_cycles") for r in results],
        "overlapped": all(r.get("overlapped", False) for r in results),
        # link and compute overlapped: the period is the longer of the two
        "predicted_images_per_s": predicted_images_per_s(*figures, overlap=True),
        # compute, then transfer
        "predicted_sequential_images_per_s": predicted_images_per_s(*figures),
        "images_per_s_goal": GOAL_IMAGES_PER_S.get(variant),
        "compute_bound_images_per_s": clock_hz / cycles,
        "wall_s_per_image": _mean(r["wall_s"] for r in results),
        "wall_s_each": [r["wall_s"] for r in results],
        "wall_goal_s": GOAL_WALL_S.get((variant, size)),
        "golden_match": all(r["golden_match"] for r in results),
        "top1": [r["top5"][0]["label"] for r in results],
    }


def streamed_figures(path: Path = E2E_RESULTS) -> dict[tuple[str, str], float] | None:
    """Streamed mode's predicted UART images/s by (variant, weights mode) from bench/e2e's
    saved results; None when they were never saved."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return None
    return {(r["variant"], r["weights_mode"]): r["uart_12mbaud_images_per_s"] for r in rows}


def _goal(
    value: float, goal: float | None, fmt: str, unit: str = "", at_least: bool = False
) -> str:
    """``value`` with its goal beside it, an upper bound (or a lower one, ``at_least``); never
    asserted."""
    if goal is None:
        return f"{value:{fmt}}{unit}"
    met = value >= goal if at_least else value <= goal
    bound = ">=" if at_least else "<="
    return f"{value:{fmt}}{unit} (goal {bound} {goal:{fmt}}{unit}, {'met' if met else 'NOT met'})"


def print_row(row: dict, streamed: dict | None) -> None:
    load = row["model_load"]
    name = f"{row['variant']}@{row['size']} {row['weights_mode']}"
    print(f"{name}:")
    print(
        f"  model load    {load['bytes']:,} bytes in DRAM, {load['link_bytes']:,} link bytes, "
        f"{load['wall_s']:.1f} s wall (simulator), {load['predicted_link_s']:.2f} s over the "
        f"{row['link_kind']}; {load['calls']} load call(s), {load['writes']} write(s); second "
        f"image reloaded: {'YES' if row['reloaded_after_first'] else 'no'}"
    )
    print(
        f"  device cycles {row['device_cycles']:>13,.0f} per image (each "
        f"{', '.join(f'{c:,}' for c in row['device_cycles_each'])})"
    )
    print(
        f"  engine only   {row['engine_only_cycles']:>13,} (Program.predicted_cycles); "
        f"device/engine {_goal(row['device_over_engine'], GOAL_DEVICE_OVER_ENGINE, '.3f')}"
    )
    print(
        f"  cost model    {row['model_cycles']:>13,} (fpga.compiler.traffic.device_cycles): "
        f"{row['model_over_device']:.4f}x the device's (the link's transfers taken out)"
    )
    print(
        f"  split         engine {row['engine_share']:.1%}  DMA wait {row['dma_wait_share']:.1%}"
        f"  other {row['other_share']:.1%}"
    )
    print(
        f"  link bytes    {row['link_bytes_per_image']:>13,.0f} per image, minimum "
        f"{row['minimum_link_bytes']:,} (input + logits): "
        f"{_goal(row['link_ratio'], GOAL_LINK_RATIO, '.3f', 'x')}"
    )
    was = streamed.get((row["variant"], row["weights_mode"])) if streamed else None
    versus = (
        f"; streamed mode {was:.3f} images/s ({row['predicted_images_per_s'] / was:.0f}x)"
        if was
        else "; streamed mode: no saved figure (bench/results/e2e.json)"
    )
    host = ", ".join("-" if c is None else f"{c:,}" for c in row["host_cycles_each"])
    print(f"  host cycles   {host} per image (the device serving the link during each run)")
    over = result_link(row).describe()
    arty = f"on the Arty A7 at {row['clock_hz'] / 1e6:g} MHz over {over}"
    overlapped = _goal(
        row["predicted_images_per_s"], row["images_per_s_goal"], ".3f", at_least=True
    )
    print(f"  predicted     {overlapped} images/s (link and compute overlapped) {arty}{versus}")
    print(
        f"  sequential    {row['predicted_sequential_images_per_s']:>13.3f} images/s (compute, "
        "then transfer)"
    )
    print(
        f"  compute-bound {row['compute_bound_images_per_s']:>13.3f} images/s at "
        f"{row['clock_hz'] / 1e6:g} MHz"
    )
    print(
        f"  wall (sim)    {_goal(row['wall_s_per_image'], row['wall_goal_s'], '.1f', ' s')} per "
        f"image (each {', '.join(f'{w:.1f}' for w in row['wall_s_each'])} s)"
    )
    print(f"  golden_match  {row['golden_match']}   top-1 {row['top1']}", flush=True)


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'network':<10} {'weights':<8} {'load B':>11} {'load s':>7} {'cycles/img':>12} "
        f"{'engine':>12} {'dev/eng':>7} {'eng/DMA/oth %':>15} {'link B':>9} {'x min':>6} "
        f"{'host cyc':>9} {'img/s':>6} {'goal':>9} {'seq':>6} {'cb img/s':>8} {'wall s':>7} "
        f"{'golden':>6}"
    )
    for r in rows:
        split = f"{r['engine_share']:.0%}/{r['dma_wait_share']:.0%}/{r['other_share']:.0%}"
        host = [c for c in r["host_cycles_each"] if c is not None]
        host = f"{_mean(host):,.0f}" if host else "-"
        goal = r["images_per_s_goal"]
        goal = (
            f">={goal:g} {'met' if r['predicted_images_per_s'] >= goal else 'NO'}" if goal else "-"
        )
        print(
            f"{r['variant'] + '@' + str(r['size']):<10} {r['weights_mode']:<8} "
            f"{r['model_load']['link_bytes']:>11,} {r['model_load']['wall_s']:>7.1f} "
            f"{r['device_cycles']:>12,.0f} {r['engine_only_cycles']:>12,} "
            f"{r['device_over_engine']:>7.3f} {split:>15} {r['link_bytes_per_image']:>9,.0f} "
            f"{r['link_ratio']:>6.3f} {host:>9} {r['predicted_images_per_s']:>6.3f} {goal:>9} "
            f"{r['predicted_sequential_images_per_s']:>6.3f} "
            f"{r['compute_bound_images_per_s']:>8.3f} {r['wall_s_per_image']:>7.1f} "
            f"{str(r['golden_match']):>6}"
        )
    print(
        f"goals: device/engine <= {GOAL_DEVICE_OVER_ENGINE}, link <= {GOAL_LINK_RATIO}x the "
        "minimum, wall <= 40 s per image for v1.0@227 (simulator), img/s >= "
        f"{GOAL_IMAGES_PER_S['v1.0']:g} (v1.0) / >= {GOAL_IMAGES_PER_S['v1.1']:g} (v1.1); img/s: "
        "Arty A7 over its UART with link and compute overlapped; seq: compute then transfer; "
        "host cyc: the device serving the link during a run (mean); cb: compute-bound"
    )


def board_predictions(rows: list[dict]) -> list[dict]:
    """Per Arty and network (index weights, the 35T's only kind): the cost model's device cycles
    (``fpga.compiler.traffic.device_cycles``, within ~1 % of the simulated board above) for the
    board's own config, double-buffered and not, and the images/s over its 12 Mbaud UART with the
    link bytes and frames measured above (framed input + logits), overlapped and sequential, and
    over its 100 Mbit/s Ethernet (the same frames, one per datagram), overlapped."""
    from fpga.compiler.program import compile_network
    from fpga.compiler.resident import compile_resident
    from fpga.compiler.traffic import device_cycles
    from fpga.spec.boards import get_board
    from fpga.spec.network import shape_network

    link = {
        (r["variant"], r["weights_mode"]): (r["link_bytes_per_image"], r["link_frames_per_image"])
        for r in rows
    }
    out = []
    print("\npredicted per board (cost model, index weights; link bytes as measured above):")
    for name in ("arty_a7", "arty_a7_100"):
        board = get_board(name)
        config = board.config
        goal = GOAL_DEVICE_OVER_ENGINE if config.rows <= 8 else GOAL_DEVICE_OVER_ENGINE_WIDE
        for variant, size in NETWORKS:
            network = shape_network(variant, size)
            engine = sum(compile_network(network, config).predicted_cycles().values())
            cycles = {}
            for split in (True, False):
                program = compile_network(network, config, split=split)
                image = compile_resident(program, input_size=size)
                cycles[split] = device_cycles(image)["total"]
            hz, traffic = board.clock_mhz * 1e6, link[(variant, "indices")]
            uart = LinkRate(LinkKind.UART, board.baud).seconds(*traffic)
            ethernet = LinkRate(LinkKind.ETHERNET, board.ethernet.rate_mbps * 10**6)
            row = {
                "board": name,
                "config": f"{config.rows}x{config.cols}",
                "variant": variant,
                "engine_cycles": engine,
                "device_cycles": cycles[True],
                "device_cycles_sequential_runs": cycles[False],
                "device_over_engine": cycles[True] / engine,
                "device_over_engine_goal": goal,
                "images_per_s": predicted_images_per_s(cycles[True], hz, uart, True),
                "images_per_s_sequential": predicted_images_per_s(cycles[True], hz, uart),
                "images_per_s_without_double_buffering": predicted_images_per_s(
                    cycles[False], hz, uart, True
                ),
                "images_per_s_ethernet": predicted_images_per_s(
                    cycles[True], hz, ethernet.seconds(*traffic), True
                ),
            }
            out.append(row)
            print(
                f"  {name:12} {row['config']:6} {variant}: engine {engine:>11,}  device "
                f"{cycles[True]:>11,} ({_goal(row['device_over_engine'], goal, '.3f')}; "
                f"{cycles[False]:,} without double buffering)  images/s {row['images_per_s']:.2f} "
                f"overlapped, {row['images_per_s_sequential']:.2f} sequential "
                f"({row['images_per_s_without_double_buffering']:.2f} without double buffering); "
                f"{row['images_per_s_ethernet']:.2f} overlapped over {ethernet.describe()}"
            )
    return out


def main() -> dict:
    photos = bundled_photos()
    images = [photos[i % len(photos)] for i in range(IMAGES)]
    streamed = streamed_figures()
    if streamed is None:
        print(
            "streamed mode: bench/results/e2e.json not found, no streamed figures to compare "
            "(run `python -m bench e2e`)"
        )
    rows = []
    board = BoardProcess(build_binary()).start()
    try:
        device = board.open_device()
        info = device.identify()
        print(
            f"one simulated board with DRAM ({info.dram_bytes / 2**20:.0f} MiB), "
            f"{info.clock_hz / 1e6:g} MHz; images {[p.name for p in images]}",
            flush=True,
        )
        for variant, size in NETWORKS:
            network = quant.quantize_network(variant, size=size)
            for weights_mode in WEIGHTS_MODES:
                loads = TimedLoads(device)
                results = classify_on_device(
                    device,
                    network,
                    None,
                    images,
                    progress=False,
                    weights_mode=weights_mode,
                    mode="resident",
                )
                device.load_model = loads._load
                row = summarize(variant, size, weights_mode, results, loads.calls)
                rows.append(row)
                print_row(row, streamed)
        device.close()
    finally:
        board.stop()
    print_table(rows)
    boards = board_predictions(rows)
    return {
        "rows": rows,
        "boards": boards,
        "images": [str(p) for p in images],
        "streamed_images_per_s": {f"{v} {m}": s for (v, m), s in (streamed or {}).items()},
        "board_cycles_total": board.cycles,
    }

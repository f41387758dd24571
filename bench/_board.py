"""Shared by the engine and e2e benchmarks: one real-RTL inference per variant, cached."""

import time
from functools import cache

from fpga.compiler.program import compile_network, execute
from fpga.spec import golden
from fpga.spec.image import bundled_photos, preprocess
from fpga.toolflow import quant
from host.simulated import BoardProcess
from sim.board import build


@cache
def board_run(variant: str, size: int, weights_mode: str = "indices") -> dict:
    network = quant.quantize_network(variant, size=size)
    image = network.quantize_input(preprocess(bundled_photos()[1], size))
    with BoardProcess(build()) as board:
        device = board.open_device()
        info = device.identify()
        program = compile_network(network, info.config(), weights_mode=weights_mode)
        start = time.perf_counter()
        tensors, stats = execute(program, device, image)
        wall = time.perf_counter() - start
        framed = device.link_bytes
        device.close()
    expected = golden.run_network(network, image, keep=False)[network.output.name]
    return {
        "variant": variant,
        "size": size,
        "weights_mode": weights_mode,
        "config": info.config(),
        "program": program,
        "stats": stats,
        "wall_s": wall,
        "board_cycles": board.cycles,
        "framed_link_bytes": framed,
        "golden_match": bool((tensors[program.output] == expected).all()),
    }

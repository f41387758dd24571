"""Golden model vs torch float: wall time of one inference, and int8-vs-float fidelity.

Goal (issue 3): a whole v1.0 227x227 golden inference takes at most 2x the torch float model.
"""

import time

import numpy as np
import torch

from fpga.spec import golden
from fpga.spec.image import bundled_photos, preprocess
from fpga.toolflow import quant


def _best_of(fn, repeats: int = 15) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> dict:
    results = {"timing": [], "fidelity": quant.fidelity_report()}
    image = preprocess(bundled_photos()[0])
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'variant':<8} {'torch float':>12} {'golden int8':>12} {'ratio':>7}  (goal <= 2.0x)")
    for variant in ("v1.0", "v1.1"):
        model = quant.load_model(variant)
        network = quant.quantize_network(variant)
        x = network.quantize_input(image)
        batch = torch.from_numpy(image)[None]

        def run_torch(model=model, batch=batch):
            with torch.no_grad():
                model(batch)

        run_torch()
        golden.run_network(network, x, keep=False)
        t_torch = _best_of(run_torch)
        t_golden = _best_of(lambda net=network, x=x: golden.run_network(net, x, keep=False))
        row = {
            "variant": variant,
            "torch_s": t_torch,
            "golden_s": t_golden,
            "ratio": t_golden / t_torch,
        }
        results["timing"].append(row)
        print(
            f"{variant:<8} {t_torch * 1e3:>9.1f} ms {t_golden * 1e3:>9.1f} ms {row['ratio']:>6.2f}x"
        )
    print("\nint8 vs float fidelity on the bundled photos at 227 px")
    for row in results["fidelity"]:
        print(
            f"{row['variant']:<8} top-1 {row['top1_agreement']:.0%}"
            f"  top-5 {row['top5_agreement']:.0%}"
            f"  logit SNR {row['snr_db']:.1f} dB  (float top-1 {row['float_top1']},"
            f" int8 top-1 {row['int8_top1']})"
        )
    assert np.isfinite([r["ratio"] for r in results["timing"]]).all()
    return results

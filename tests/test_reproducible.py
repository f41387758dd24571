"""The compressor emits the same bytes for the same inputs on any machine and thread count.

Each run is a fresh ``python -m fpga.compress`` process with its own thread and BLAS
settings (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` 1 and 2, OpenBLAS's
kernel forced to its most generic x86-64 one with ``OPENBLAS_CORETYPE`` or left to its CPU
detection): every file must be the same bytes, and those bytes must be :data:`PINNED_SHA256`.

The pins are the cross-machine check (docs/compression.md "Reproducible bytes"): a CI machine
that is not the one that wrote them computes the same hashes, or this fails. They change only
with a deliberate change of the format or of an algorithm (pruning, calibration, quantization,
weight sharing, coding), and the commit that changes them says which and why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fpga.spec import floatgraph
from fpga.toolflow import quant

ROOT = Path(__file__).resolve().parent.parent

#: sha256 of ``python -m fpga.compress --variant v1.0 --bits N -o F`` per ``N``
PINNED_SHA256 = {
    6: "c6f345eb9b82550f18543067fe63a1b750e60d57756283cd1d43affdcdf40a6d",
    8: "e609067311c729fa85c3a9cf649f511496ac4f5bfa75c83ce7eeb33eccbd59ea",
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: OpenBLAS's most generic kernel for this processor family (its DYNAMIC_ARCH names)
GENERIC_CORETYPE = {"x86_64": "Prescott", "aarch64": "ARMV8"}.get(platform.machine(), "")


def _environment(threads: int | None, coretype: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in THREAD_VARIABLES and k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def _compress(bits: int, out: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fpga.compress", "--variant", "v1.0", "--bits", str(bits)]
        + ["-o", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return hashlib.sha256(out.read_bytes()).hexdigest()


SETTINGS = [(threads, coretype) for threads in (1, 2) for coretype in (None, GENERIC_CORETYPE)]


def test_same_bytes_under_every_thread_count_and_blas_kernel(tmp_path):
    """v1.0 at 6 bits under four settings and at 8 bits under one (two runs at a time): every
    6-bit file the same bytes, and both equal to their pins."""
    jobs = [(6, threads, coretype) for threads, coretype in SETTINGS] + [(8, 2, None)]

    def run(job):
        bits, threads, coretype = job
        out = tmp_path / f"{bits}-{threads}-{coretype}.sqz"
        return _compress(bits, out, _environment(threads, coretype))

    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip(jobs, pool.map(run, jobs), strict=True))
    six = {job: digest for job, digest in found.items() if job[0] == 6}
    assert len(set(six.values())) == 1, f"the bytes depend on the settings: {six}"
    for bits in (6, 8):
        digest = next(d for job, d in found.items() if job[0] == bits)
        assert digest == PINNED_SHA256[bits], (
            f"v1.0 {bits}-bit is {digest}, pinned {PINNED_SHA256[bits]}: the compressor's "
            "bytes changed (see this module's docstring)"
        )


def test_float_conv_sums_in_one_fixed_order():
    """fpga.spec.floatgraph.conv2d equals a plain Python loop that adds the bias, then each product
    in (c, ky, kx) order, rounding once per step: bit for bit, not approximately."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    got = floatgraph.conv2d(x, w, b, stride=2, pad=1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    for o in range(4):
        for i in range(got.shape[1]):
            for j in range(got.shape[2]):
                acc = float(b[o])
                for c in range(3):
                    for ky in range(3):
                        for kx in range(3):
                            acc = acc + float(w[o, c, ky, kx]) * float(
                                xp[c, 2 * i + ky, 2 * j + kx]
                            )
                assert got[o, i, j] == acc


def test_requantization_factor_at_a_power_of_two_is_exact():
    """floor(log2) comes from the exponent: 2**-k is multiplier 2**15, shift 15 + k (np.log2 may
    be an ulp off on some CPUs, which would move the shift)."""
    for k in range(0, 30):
        mult, shift = quant.quantize_multiplier(np.ldexp(1.0, -k))
        assert (int(mult[0]), int(shift[0])) == (1 << 15, 15 + k)
    below = np.nextafter(np.ldexp(1.0, -3), 0)
    mult, shift = quant.quantize_multiplier(below)
    assert (int(mult[0]), int(shift[0])) == (1 << 15, 18)  # rounded up into bit 16


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_float_graph_agrees_with_torch(variant):
    """The float64 graph the quantizer calibrates on against torch's model (an independent
    implementation, float32): the same network, logits within 1e-4."""
    from fpga.spec.image import bundled_photos, preprocess
    from fpga.toolflow.model import load_weights

    weights = load_weights(variant)
    model = quant.load_model(variant, weights)
    image = preprocess(bundled_photos()[1], 96)
    ours = floatgraph.logits(variant, weights, image)
    theirs = quant.float_logits(variant, image, model)
    assert np.abs(ours - theirs).max() < 1e-4
    assert int(np.argmax(ours)) == int(np.argmax(theirs))

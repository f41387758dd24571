"""Graph fuzz: structured mutations of a valid model's graph JSON, re-signed with valid CRCs.

Each mutated file gets past the byte checks of ``fpga.spec.sqz``; from there the reader must either
refuse it with ``FormatError`` or return a network that the golden model runs and the compiler
tiles (or refuses with its own ``CompileError``) — never another exception, and never a large
allocation: the loop runs in a subprocess under ``RLIMIT_AS``, so an unbounded allocation
becomes a ``MemoryError`` and fails the test.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = 1616
TRIALS = 1500
#: address-space limit of the fuzz subprocess
MEMORY_LIMIT = 3 * 1024**3
#: inputs above this side are read but not run through the golden model (time, not memory)
RUN_LIMIT = 96

NASTY = [
    0,
    -1,
    1,
    2,
    3,
    5,
    7,
    31,
    32,
    33,
    1024,
    1025,
    100000,
    2**31,
    2**63,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    1e-300,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    None,
    True,
    False,
    "",
    "input",
    "conv",
    "x" * 300,
    "\u00e9\u0000",
    [],
    [1],
    [1, 2],
    [1, 2, 3],
    ["input"],
    {},
    {"a": 1},
]
FIELDS = [
    "name",
    "op",
    "inputs",
    "out_scale",
    "stride",
    "pad",
    "relu",
    "multiplier",
    "shift",
    "ceil_mode",
]
#: the optional task fields (issue 34: classes, labels, preprocess) too, absent in the sample
TOP_FIELDS = [
    "variant",
    "input_size",
    "input_scale",
    "meta",
    "layers",
    "classes",
    "labels",
    "preprocess",
]


def resign(good: bytes, graph_payload: bytes) -> bytes:
    """``good`` with its graph section replaced by ``graph_payload``, header and every CRC valid
    (as ``fpga.spec.sqz`` computes them), the conv sections copied verbatim."""
    from fpga.spec import sqz

    magic, version, coding, _, n_sections = sqz.HEADER.unpack(good[: sqz.HEADER.size])
    pos = sqz.HEADER.size + sqz.HEADER_CRC.size
    sections = []
    for _ in range(n_sections):
        tag, name_len, length = sqz.SECTION_HEAD.unpack(good[pos : pos + sqz.SECTION_HEAD.size])
        end = pos + sqz.SECTION_HEAD.size + name_len + length + 4
        if tag == b"GRPH":
            sections.append(sqz._section(b"GRPH", "graph", graph_payload))
        else:
            sections.append(good[pos:end])
        pos = end
    body = b"".join(sections)
    total = sqz.HEADER.size + sqz.HEADER_CRC.size + len(body)
    header = sqz.HEADER.pack(magic, version, coding, total, n_sections)
    return header + struct.pack("<I", zlib.crc32(header)) + body


def graph_payload(data: bytes) -> bytes:
    """The graph section's JSON payload of a valid file."""
    from fpga.spec import sqz

    pos = sqz.HEADER.size + sqz.HEADER_CRC.size
    _, name_len, length = sqz.SECTION_HEAD.unpack(data[pos : pos + sqz.SECTION_HEAD.size])
    start = pos + sqz.SECTION_HEAD.size + name_len
    return data[start : start + length]


def mutate(graph: dict, rng: np.random.Generator):
    """One structured mutation of the graph object (in place where possible); returns the graph
    object or raw JSON text."""
    layers = graph.get("layers") if isinstance(graph, dict) else None
    if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
        return graph  # already broken beyond structured mutation
    kind = int(rng.integers(12))
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    if kind == 0:  # a top-level field set to a nasty value, or deleted
        key = pick(TOP_FIELDS)
        if rng.random() < 0.15:
            graph.pop(key, None)
        else:
            graph[key] = copy.deepcopy(pick(NASTY))
    elif kind in (1, 2, 3):  # a layer field set to a nasty value, or deleted
        layer = pick(layers)
        key = pick(FIELDS)
        if rng.random() < 0.15:
            layer.pop(key, None)
        else:
            layer[key] = copy.deepcopy(pick(NASTY))
    elif kind == 4:  # numeric field nudged (plausible but wrong values)
        layer = pick(layers)
        key = pick(["stride", "pad", "out_scale"])
        value = layer.get(key, 1)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            layer[key] = type(value)(value + int(rng.integers(-3, 4)))
    elif kind == 5:  # inputs rewired: nonexistent, later, itself, the image, the output
        i = int(rng.integers(len(layers)))
        names = [layer["name"] for layer in layers] + ["input", "nosuch"]
        layers[i]["inputs"] = [pick(names) for _ in range(int(rng.integers(0, 4)))]
    elif kind == 6:  # a layer deleted, duplicated, moved or swapped
        i, j = int(rng.integers(len(layers))), int(rng.integers(len(layers)))
        action = int(rng.integers(4))
        if action == 0:
            del layers[i]
        elif action == 1:
            layers.insert(j, copy.deepcopy(layers[i]))
        elif action == 2:
            layers.insert(j, layers.pop(i))
        else:
            layers[i], layers[j] = layers[j], layers[i]
    elif kind == 7:  # op changed to another known op
        pick(layers)["op"] = pick(["conv", "maxpool", "concat", "add", "avgpool"])
    elif kind == 8:  # input size anywhere in and around its range
        graph["input_size"] = int(pick([16, 31, 32, 33, 40, 47, 63, 64, 95, 96, 200, 1024, 1025]))
    elif kind == 9:  # raw JSON: non-finite numbers, deep nesting, huge numbers, not an object
        text = pick(
            [
                json.dumps(graph).replace('"out_scale": 0.1', '"out_scale": NaN', 1),
                json.dumps(graph).replace('"input_scale": 0.5', '"input_scale": Infinity', 1),
                json.dumps(graph).replace('"input_size": 32', '"input_size": 1e400', 1),
                json.dumps(graph).replace('"input_size": 32', '"input_size": ' + "9" * 5000, 1),
                "[" * 100000 + "]" * 100000,
                '{"layers": ' + "[" * 5000 + "]" * 5000 + "}",
                "null",
                "[]",
                '"graph"',
                json.dumps(graph)[: int(rng.integers(1, 200))],
                "\xff\xfe not utf-8",
            ]
        )
        return text
    elif kind == 10:  # a layer renamed (breaks its conv section or its consumers)
        layer = pick(layers)
        layer["name"] = pick([layer["name"] + "x", "input", layers[0]["name"], "conv1", "pool1"])
    else:  # add operands' multipliers/shift out of range, or a conv stride/pad/kernel combo
        layer = pick(layers)
        layer["stride"] = int(pick([0, 1, 2, 3, 4]))
        layer["pad"] = int(pick([-1, 0, 1, 2, 3, 100000]))
    return graph


def fuzz(trials: int, seed: int, workdir: str) -> dict:
    """The fuzz loop (runs in the limited subprocess): counts of outcomes, failures with
    tracebacks."""
    from fpga.compiler.program import compile_network
    from fpga.spec import golden
    from fpga.spec.config import AcceleratorConfig
    from fpga.spec.errors import UserError
    from fpga.spec.sqz import FormatError, read_model, write_model
    from tests.sqz_samples import shared_weights, tiny_network

    rng = np.random.default_rng(seed)
    network = tiny_network(np.random.default_rng(seed))
    good_path = Path(workdir) / "good.sqz"
    write_model(good_path, network, shared_weights(network), 6)
    good = good_path.read_bytes()
    base = json.loads(graph_payload(good))
    config = AcceleratorConfig()
    counts = {"refused": 0, "accepted": 0, "ran": 0, "compiled": 0, "compile_refused": 0}
    failures = []
    bad = Path(workdir) / "bad.sqz"
    for trial in range(trials):
        graph = copy.deepcopy(base)
        for _ in range(int(rng.integers(1, 4))):
            try:
                graph = mutate(graph, rng)
            except (KeyError, TypeError, IndexError, ValueError, AttributeError):
                pass  # the mutator met an earlier mutation's damage: keep the graph as it is
            if isinstance(graph, str):
                break
        if isinstance(graph, str):
            payload = graph.encode("utf-8", "surrogatepass")
        else:
            payload = json.dumps(graph).encode()
        bad.write_bytes(resign(good, payload))
        try:
            try:
                model, _, _ = read_model(bad)
            except FormatError:
                counts["refused"] += 1
                continue
            counts["accepted"] += 1
            if model.input_size <= RUN_LIMIT:
                image = np.zeros((3, model.input_size, model.input_size), np.int8)
                image[:, ::3, ::2] = 100
                golden.run_network(model, image, keep=False)
                counts["ran"] += 1
            try:
                compile_network(model, config)
                counts["compiled"] += 1
            except UserError:
                counts["compile_refused"] += 1
        except Exception:  # noqa: BLE001 - the point: anything else is a failure
            failures.append(
                {
                    "trial": trial,
                    "payload": payload[:300].decode("utf-8", "replace"),
                    "traceback": traceback.format_exc()[-1500:],
                }
            )
    return {"trials": trials, "counts": counts, "failures": failures[:10], "failed": len(failures)}


def _limited_main() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    trials, seed, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(json.dumps(fuzz(trials, seed, workdir)))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS")
def test_graph_fuzz_only_format_errors_under_a_memory_limit(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    code = "import tests.test_graph_fuzz as t; t._limited_main()"
    out = subprocess.run(
        [sys.executable, "-c", code, str(TRIALS), str(SEED), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    print(f"seed {SEED}: {report['counts']} (rerun: TRIALS/SEED in {__file__})")
    assert report["failed"] == 0, json.dumps(report["failures"], indent=1)
    counts = report["counts"]
    assert counts["refused"] + counts["accepted"] == TRIALS >= 1000
    # both paths are exercised: most mutations are refused, some still describe a valid graph
    assert counts["refused"] > TRIALS // 2 and counts["ran"] > 20


def test_documented_limits_match_the_code():
    """docs/format.md quotes the graph limits and what the largest variant needs at the largest
    input: both come from fpga.spec.graph, checked here so that they cannot drift."""
    from fpga.spec import graph as g
    from fpga.toolflow.model import expected_shapes
    from fpga.toolflow.quant import float_graph

    text = (ROOT / "docs" / "format.md").read_text()
    assert f"**{g.MIN_INPUT_SIZE}..{g.MAX_INPUT_SIZE}**" in text
    assert f"<= {g.MAX_TENSOR_ELEMENTS // 2**20} Mi elements in any one tensor" in text
    assert f"<= {g.MAX_UNFOLDED_ELEMENTS // 2**20} Mi elements in one conv's unfolded" in text
    assert f"<= {g.MAX_ACTIVATION_BYTES // 2**20} MiB of int8" in text
    need = {}
    for variant in ("v1.0", "v1.1", "simple-bypass", "complex-bypass"):
        shapes = expected_shapes(variant)
        convs, layers = {}, []
        for node in float_graph(variant):
            layer = {
                "name": node["name"],
                "op": node["op"],
                "inputs": list(node["inputs"]),
                "out_scale": 0.1,
                "stride": node.get("stride", 1),
                "pad": node.get("pad", 0),
                "relu": node.get("relu", True),
            }
            if node["op"] == "conv":
                c_out, c_in, k, _ = shapes[node["name"] + ".weight"]
                convs[node["name"]] = (c_out, c_in, k)
            if node["op"] == "add":
                layer.update(multiplier=[1, 1], shift=[0])
            layers.append(layer)
        raw = {"variant": variant, "input_size": g.MAX_INPUT_SIZE, "input_scale": 1.0}
        checked = g.check_graph({**raw, "layers": layers}, convs)
        tensors = [s for s in checked.shapes.values() if len(s) == 3]
        unfolded = [
            convs[x["name"]][1] * convs[x["name"]][2] ** 2 * np.prod(checked.shapes[x["name"]][1:])
            for x in checked.layers
            if x["op"] == "conv"
        ]
        need[variant] = (
            sum(int(np.prod(s)) for s in tensors),
            int(max(unfolded)),
            max(int(np.prod(s)) for s in tensors),
        )
    activations, unfolded, tensor = (max(v[i] for v in need.values()) for i in range(3))
    assert need["complex-bypass"][0] == activations
    quoted = (
        f"needs {activations / 2**20:.0f} MiB of activations, {unfolded / 2**20:.1f} Mi unfolded "
        f"elements\nand {tensor / 2**20:.1f} Mi elements in one tensor"
    )
    assert " ".join(quoted.split()) in " ".join(text.split()), quoted

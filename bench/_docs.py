"""Numbers quoted in README.md and docs/*.md, computed from the code (``make docs``).

A quoted number is written between markers, ``<!--fact:KEY-->13,766,452<!--/fact-->``, so it renders
as plain text. Inside a fenced code block (sample output) markers would show, so a line
``<!--block-fact:KEY=VALUE-->`` before the block names the value that occurs in it.
``python -m bench._docs`` recomputes every fact and rewrites the files; ``--check`` only
compares and lists the stale ones (exit 1). ``tests/test_docs.py`` runs the same comparison, so
a change that moves a number fails CI until the docs are regenerated.

Only numbers the code determines are facts here (sizes, cycles, parameters, fidelity);
measured wall times and Fmax come from ``make bench`` and are dated where they are quoted.
"""

from __future__ import annotations

import functools
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
INLINE = re.compile(r"<!--fact:([\w.\-]+)-->(.*?)<!--/fact-->")
BLOCK = re.compile(r"<!--block-fact:([\w.\-]+)=(.*?)-->")
SIZES = {"v1.0": 227, "v1.1": 224, "simple-bypass": 227, "complex-bypass": 227}


@functools.cache
def _program(variant: str, config: str = "default"):
    from fpga.build.flow import CONFIGS
    from fpga.compiler.program import compile_network
    from fpga.toolflow import quant

    network = quant.quantize_network(variant, size=SIZES[variant])
    return compile_network(network, CONFIGS[config])


def _cycles(variant: str, config: str = "default") -> int:
    return sum(_program(variant, config).predicted_cycles().values())


def _op_cycles(variant: str, op: str) -> int:
    """Cycles the default engine spends in ``variant``'s units of ``op`` (``"add"``, ...)."""
    program = _program(variant)
    cycles = program.predicted_cycles()
    return sum(cycles[unit.name] for unit in program.units if unit.op == op)


def _latency(op: str) -> str:
    from fpga.spec.config import DEFAULT_CONFIG
    from fpga.spec.layout import Op, pipeline_latency

    return str(pipeline_latency(Op[op], DEFAULT_CONFIG))


def _array_latency() -> int:
    from fpga.spec.config import DEFAULT_CONFIG
    from fpga.spec.layout import array_latency

    return array_latency(DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols)


def _utilization(variant: str, config: str = "default") -> float:
    program = _program(variant, config)
    macs = sum(unit.macs for unit in program.units)
    return macs / (_cycles(variant, config) * program.config.pes)


def _params(variant: str) -> int:
    from fpga.toolflow.model import summary

    return summary(variant)["totals"]["params"]


@functools.cache
def _compressed_bytes(variant: str, bits: int) -> int:
    """Size of the file ``python -m fpga.compress --variant V --bits B`` writes (as make infer)."""
    import contextlib
    import io

    from fpga.toolflow.compress.cli import main as compress

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.sqz"
        with contextlib.redirect_stdout(io.StringIO()):
            code = compress(["--variant", variant, "--bits", str(bits), "-o", str(path)])
        if code != 0:
            raise RuntimeError(f"fpga.compress {variant} {bits}-bit failed ({code})")
        return path.stat().st_size


def _release_bytes() -> int:
    from fpga.spec.arch import DATA_DIR

    return (DATA_DIR / "compressed_SqueezeNet.net").stat().st_size


def _mhz_images_per_s(variant: str, mhz: float = 100.0) -> float:
    return mhz * 1e6 / _cycles(variant)


def _board(name: str):
    from fpga.spec.boards import get_board

    return get_board(name)


def _count(value: int) -> str:
    return f"{value:,}"


#: fact key -> function giving its text exactly as quoted
FACTS: dict[str, Callable[[], str]] = {
    "v1.0.params": lambda: _count(_params("v1.0")),
    "v1.1.params": lambda: _count(_params("v1.1")),
    "v1.0.cycles": lambda: _count(_cycles("v1.0")),
    "v1.1.cycles": lambda: _count(_cycles("v1.1")),
    "v1.0.cycles_m": lambda: f"{_cycles('v1.0') / 1e6:.2f}",
    "v1.1.cycles_m": lambda: f"{_cycles('v1.1') / 1e6:.1f}",
    "v1.0.utilization": lambda: f"{100 * _utilization('v1.0'):.1f}",
    "v1.1.utilization": lambda: f"{100 * _utilization('v1.1'):.1f}",
    "v1.0.images_per_s_100mhz": lambda: f"{_mhz_images_per_s('v1.0'):.1f}",
    "v1.1.images_per_s_100mhz": lambda: f"{_mhz_images_per_s('v1.1'):.1f}",
    "v1.0.6bit.bytes": lambda: _count(_compressed_bytes("v1.0", 6)),
    "release.bytes": lambda: _count(_release_bytes()),
    "ulx3s.engine_mhz": lambda: f"{_board('ulx3s').engine_clock_mhz:g}",
    **{
        f"{variant}.{what}": function
        for variant in ("simple-bypass", "complex-bypass")
        for what, function in (
            ("cycles", lambda v=variant: _count(_cycles(v))),
            ("add_cycles", lambda v=variant: _count(_op_cycles(v, "add"))),
            ("add_share", lambda v=variant: f"{100 * _op_cycles(v, 'add') / _cycles(v):.1f}"),
        )
    },
    **{
        f"latency.{op.lower()}": lambda op=op: _latency(op)
        for op in ("CONV", "MAXPOOL", "ADD", "AVGPOOL")
    },
    "latency.array": lambda: str(_array_latency()),
    "wide.v1.0.cycles": lambda: _count(_cycles("v1.0", "wide")),
    "wide.v1.1.cycles": lambda: _count(_cycles("v1.1", "wide")),
    **{
        f"wide.{variant}.{what}": function
        for variant in ("v1.0", "v1.1")
        for what, function in (
            ("images_per_s_100mhz", lambda v=variant: f"{1e8 / _cycles(v, 'wide'):.1f}"),
            ("speedup", lambda v=variant: f"{_cycles(v) / _cycles(v, 'wide'):.2f}"),
        )
    },
    "wide.v1.0.utilization": lambda: f"{100 * _utilization('v1.0', 'wide'):.1f}",
    "wide.v1.1.utilization": lambda: f"{100 * _utilization('v1.1', 'wide'):.1f}",
}


@functools.cache
def value(key: str) -> str:
    if key not in FACTS:
        raise KeyError(f"unknown fact {key!r} (known: {', '.join(sorted(FACTS))})")
    return FACTS[key]()


def quoted(text: str) -> list[tuple[str, str]]:
    """Every (key, quoted value) in a document's text."""
    return [(m[1], m[2]) for m in INLINE.finditer(text)] + [
        (m[1], m[2]) for m in BLOCK.finditer(text)
    ]


def _rewrite_block(text: str, match: re.Match, new: str) -> str:
    """Replace the block-fact marker's value and the same value in the fenced block after it."""
    key, old = match[1], match[2]
    start = text.index("```", match.end())
    end = text.index("```", start + 3)
    block = text[start:end]
    if old not in block:
        raise ValueError(f"block-fact {key}: {old!r} does not occur in the block after it")
    marker = f"<!--block-fact:{key}={new}-->"
    return (
        text[: match.start()]
        + marker
        + text[match.end() : start]
        + block.replace(old, new)
        + (text[end:])
    )


def rewrite(text: str) -> str:
    text = INLINE.sub(lambda m: f"<!--fact:{m[1]}-->{value(m[1])}<!--/fact-->", text)
    while True:
        stale = next((m for m in BLOCK.finditer(text) if m[2] != value(m[1])), None)
        if stale is None:
            return text
        text = _rewrite_block(text, stale, value(stale[1]))


def stale_facts() -> list[str]:
    """``file: key quoted X, code gives Y`` for every quoted number that drifted."""
    out = []
    for path in FILES:
        text = path.read_text()
        for key, quoted_value in quoted(text):
            if quoted_value != value(key):
                out.append(f"{path.name}: {key} quoted {quoted_value}, code gives {value(key)}")
        for m in BLOCK.finditer(text):
            start = text.index("```", m.end())
            if m[2] not in text[start : text.index("```", start + 3)]:
                out.append(f"{path.name}: {m[1]} = {m[2]} not in the block after its marker")
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_facts()
        print("\n".join(stale) or "every quoted number matches the code")
        return 1 if stale else 0
    for path in FILES:
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

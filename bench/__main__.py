"""`make bench`: run every benchmark module in this folder and print measured numbers.

Each ``bench/<topic>.py`` has ``main() -> dict`` that prints a table and returns its numbers;
results are saved as ``bench/results/<topic>.json``. ``python -m bench TOPIC...`` runs a subset.
"""

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    topics = argv or sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for topic in topics:
        print(f"\n=== bench: {topic} ===", flush=True)
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"bench.{topic}").main()
        except Exception as exc:  # a broken benchmark must not hide the others' numbers
            print(f"bench {topic} FAILED: {type(exc).__name__}: {exc}")
            failed.append(topic)
            continue
        (RESULTS / f"{topic}.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"--- {topic}: {time.perf_counter() - start:.1f} s, saved bench/results/{topic}.json")
    if failed:
        print(f"\nfailed benchmarks: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

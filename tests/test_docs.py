"""Numbers quoted in README.md and docs/ equal what the code computes today (see bench._docs)."""

from bench import _docs


def test_every_quoted_number_matches_the_code():
    stale = _docs.stale_facts()
    assert not stale, "docs drifted; run `make docs`:\n" + "\n".join(stale)


def test_readme_quotes_the_headline_numbers():
    keys = {key for key, _ in _docs.quoted(_docs.FILES[0].read_text())}
    assert {"v1.0.cycles", "v1.0.6bit.bytes", "v1.0.utilization"} <= keys


def test_a_stale_number_is_found_and_rewritten():
    good = _docs.value("release.bytes")
    text = (
        "size <!--fact:release.bytes-->1<!--/fact--> bytes\n"
        "<!--block-fact:release.bytes=1-->\n```\ntotal 1 bytes\n```\n"
    )
    assert [v for _, v in _docs.quoted(text)] == ["1", "1"]
    fixed = _docs.rewrite(text)
    assert fixed.count(good) == 3 and "total 1 " not in fixed
    assert all(v == good for _, v in _docs.quoted(fixed))


def _message_texts() -> list[str]:
    """Every string literal of the host, the programmer and the compiler (whose refusals the
    host prints), an f-string's fields written ``…``."""
    import ast

    texts = []
    paths = [_docs.ROOT / "fpga/build/program.py", _docs.ROOT / "fpga/compiler/program.py"]
    for path in [*sorted(_docs.ROOT.glob("host/*.py")), *paths]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [p.value if isinstance(p, ast.Constant) else "…" for p in node.values]
                texts.append("".join(parts))
    return texts


def test_boards_troubleshooting_quotes_what_the_tools_print():
    """docs/boards.md's troubleshooting table quotes each message (its first column, in
    backticks, ``…`` for what varies) as the code writes it: each piece between the ``…`` is in
    one string literal of host/, fpga/build/program.py or fpga/compiler/program.py."""
    import re

    text = (_docs.ROOT / "docs" / "boards.md").read_text().split("## Troubleshooting")[1]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    quotes = [q for row in rows for q in re.findall(r"`([^`]+)`", row.split(" | ")[0])]
    assert len(quotes) >= 15, quotes
    sources = _message_texts()
    missing = [
        quote
        for quote in quotes
        for piece in quote.split("…")
        if piece.strip() and not any(piece in source for source in sources)
    ]
    assert not missing, f"docs/boards.md quotes messages the code does not print: {missing}"

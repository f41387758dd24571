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

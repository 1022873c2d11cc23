"""docs/bench keeps what the docs cite: every raw result file there is named (or matched by a named
pattern) in a document, so a reader can trace each number to its file and nothing lies there unread."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def expand(pattern: str) -> list[str]:
    """``a{b,c}d`` -> ``abd``, ``acd`` (one level of braces, as the docs write them)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [
        alternative
        for choice in match.group(1).split(",")
        for alternative in expand(pattern[: match.start()] + choice + pattern[match.end() :])
    ]


def cited_patterns() -> list[str]:
    texts = [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    quoted = [q for text in texts for q in re.findall(r"`([^`\s]+)`", text)]
    return [name.removeprefix("docs/bench/") for q in quoted for name in expand(q)]


def uncited(files: list[str], patterns: list[str]) -> list[str]:
    return [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]


def test_every_raw_result_file_is_cited_by_a_document():
    files = sorted(p.name for p in (ROOT / "docs" / "bench").iterdir())
    assert uncited(files, cited_patterns()) == []


def test_the_check_sees_a_file_no_document_names():
    patterns = ["h200-32k.json", "fa4-run-*-32768.txt", *expand("{ours,peer}-32768.txt")]
    files = ["h200-32k.json", "fa4-run-a-32768.txt", "ours-32768.txt", "peer-32768.txt", "stray.json"]
    assert uncited(files, patterns) == ["stray.json"]

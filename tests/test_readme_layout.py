"""The README's layout section names every module of the package, so a newcomer finds each file there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Layout") :].split("\n## ", 1)[0]


def unnamed_modules(layout: str, package: Path) -> list[str]:
    """Modules neither named in ``layout`` nor inside a subpackage the layout names as ``name/``
    (such a subpackage carries its own map in its __init__)."""
    words = set(re.findall(r"[\w.]+/?", layout))
    missing = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if path.name == "__init__.py" or (len(parts) > 2 and f"{parts[1]}/" in words):
            continue
        if path.name not in words:
            missing.append("/".join(parts))
    return missing


def test_the_readme_layout_names_every_module():
    assert unnamed_modules(layout_section(), ROOT / "anchor_lightning") == []


def test_the_check_sees_an_unnamed_module(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "packing.py").write_text("")
    (tmp_path / "data" / "stray.py").write_text("")
    (tmp_path / "eval" / "ruler").mkdir(parents=True)
    (tmp_path / "eval" / "ruler" / "tasks.py").write_text("")
    assert unnamed_modules("data/ packing.py; eval/ ruler/ (its map)", tmp_path) == ["data/stray.py"]

"""The README names what a newcomer looks for: every module of the package in its layout section, every
shipped recipe in its recipe table."""

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


def named_recipes(readme: str) -> set[str]:
    """The recipe paths the README's recipe table names, each ``{a,b}`` spelled out."""
    table = readme[readme.index("### Recipes") :].split("\n#", 1)[0]
    named = set()
    for path in re.findall(r"`(recipes/[^`]+\.yaml)`", table):
        paths = [path]
        while any("{" in p for p in paths):
            spelled = []
            for p in paths:
                head, rest = p.split("{", 1)
                options, tail = rest.split("}", 1)
                spelled += [f"{head}{option}{tail}" for option in options.split(",")]
            paths = spelled
        named.update(paths)
    return named


def test_the_readme_recipe_table_names_every_recipe():
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "recipes").rglob("*.yaml")}
    named = named_recipes((ROOT / "README.md").read_text())
    assert sorted(shipped - named) == [] and sorted(named - shipped) == []


def test_the_recipe_check_spells_out_braces():
    table = (
        "### Recipes\n| `recipes/a/{32k,64k}-{x,y}.yaml` | t |\n| `recipes/b.yaml` | u |\n\n### Next\n`recipes/c.yaml`"
    )
    assert named_recipes(table) == {
        "recipes/a/32k-x.yaml",
        "recipes/a/32k-y.yaml",
        "recipes/a/64k-x.yaml",
        "recipes/a/64k-y.yaml",
        "recipes/b.yaml",
    }

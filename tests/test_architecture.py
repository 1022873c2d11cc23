"""The house rules that keep the package easy to carry on, checked on its import graph: library code
never imports command code (the verbs' front-ends in ``anchor_lightning/commands`` and the ``__main__``
modules), so every library function is usable without a command line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anchor_lightning"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_command(module: str) -> bool:
    return (
        module == "anchor_lightning.commands"
        or module.startswith("anchor_lightning.commands.")
        or module.endswith("__main__")
    )


def library_modules() -> list[Path]:
    return [
        p for p in PACKAGE.rglob("*.py") if "commands" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"
    ]


def test_library_code_never_imports_command_code():
    offenders = {
        str(p.relative_to(PACKAGE.parent)): sorted(m for m in imports(p) if is_command(m)) for p in library_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_rule_sees_an_offender(tmp_path, monkeypatch):
    """The check itself: a library module importing a verb's front-end is caught."""
    source = "from anchor_lightning.commands.train import main\nimport anchor_lightning.bench.__main__\n"
    tree_path = tmp_path / "anchor_lightning" / "data" / "offender.py"
    tree_path.parent.mkdir(parents=True)
    tree_path.write_text(source)
    monkeypatch.setattr("tests.test_architecture.PACKAGE", tmp_path / "anchor_lightning")
    assert sorted(m for m in imports(tree_path) if is_command(m)) == [
        "anchor_lightning.bench.__main__",
        "anchor_lightning.commands.train",
        "anchor_lightning.commands.train.main",
    ]


def test_every_verb_has_its_front_end_in_commands():
    from anchor_lightning.commands import VERBS

    for verb, (module, _) in VERBS.items():
        assert (PACKAGE / "commands" / f"{module}.py").is_file(), verb
    assert (
        not (PACKAGE / "cli.py").exists()
        and not (PACKAGE / "diagnose.py").exists()
        and not (PACKAGE / "evaluate.py").exists()
    )


def test_the_console_script_exits_zero_after_a_run(monkeypatch, capsys):
    """``anchor-lightning`` is ``commands:cli``, which returns None (a returned object would become the exit status)."""
    import sys

    from anchor_lightning import commands

    text = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'anchor-lightning = "anchor_lightning.commands:cli"' in text
    monkeypatch.setattr(sys, "argv", ["anchor-lightning", "--help"])
    try:
        assert commands.cli() is None
    except SystemExit as stop:
        assert stop.code == 0
    assert "verbs:" in capsys.readouterr().out

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


# The floors of the house, lowest first: a module imports only from its own floor or those below
# (commands and the __main__ modules on top are checked above). A new top-level module or package
# must be placed here.
FLOORS = [
    {"errors"},
    {"messages", "paths"},  # what a run prints, where files go and how they are written whole
    {"checkpoint", "parallel", "loggers"},  # file formats (GGUF, run identity, .ckpt); process groups
    {"attention", "data", "eval", "diagnostics"},
    {"model"},  # the model, its training step and its export
    {"callbacks", "bench"},
    {"commands", "__main__"},
]


def unit_of(module: str) -> str | None:
    """The top-level unit of the package a module belongs to (``anchor_lightning.data.packing`` -> ``data``)."""
    parts = module.split(".")
    if parts[0] != "anchor_lightning" or len(parts) < 2:
        return None
    return parts[1]


def floor_of(unit: str) -> int:
    for level, units in enumerate(FLOORS):
        if unit in units:
            return level
    raise AssertionError(f"{unit} is on no floor: add it to FLOORS in tests/test_architecture.py")


def upward_imports(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):
            continue
        here = floor_of(parts[0])
        for module in sorted(imports(path)):
            unit = unit_of(module)
            if unit is not None and unit != parts[0] and floor_of(unit) > here:
                found.append(f"{path.relative_to(package.parent)} -> {module}")
    return found


def unit_graph(package: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        source = path.relative_to(package).with_suffix("").parts[0]
        for module in imports(path):
            unit = unit_of(module)
            if unit is not None and unit != source and source != "__init__":
                graph.setdefault(source, set()).add(unit)
    return graph


def test_every_import_points_down_or_sideways():
    assert upward_imports(PACKAGE) == []


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports between units (``[a, b, a]``), or None."""
    finished: set[str] = set()

    def visit(unit: str, path: list[str]) -> list[str] | None:
        if unit in path:
            return path[path.index(unit) :] + [unit]
        if unit in finished:
            return None
        for nxt in sorted(graph.get(unit, ())):
            circle = visit(nxt, path + [unit])
            if circle:
                return circle
        finished.add(unit)
        return None

    for unit in sorted(graph):
        circle = visit(unit, [])
        if circle:
            return circle
    return None


def test_no_circle_between_the_packages_units():
    assert find_circle(unit_graph(PACKAGE)) is None


def test_the_floors_rule_sees_an_upward_import_and_a_circle(tmp_path):
    """The checks themselves: data importing the model is upward; checkpoint <-> paths is a circle."""
    package = tmp_path / "anchor_lightning"
    (package / "data").mkdir(parents=True)
    (package / "checkpoint").mkdir()
    (package / "data" / "bad.py").write_text("from anchor_lightning.model.module import AnchorLM\n")
    (package / "checkpoint" / "x.py").write_text("from anchor_lightning.paths import atomic_write\n")
    (package / "paths.py").write_text("from anchor_lightning.checkpoint import x\n")
    import tests.test_architecture as rules

    original, rules.PACKAGE = rules.PACKAGE, package  # imports() names modules relative to PACKAGE
    try:
        assert upward_imports(package) == [
            "anchor_lightning/data/bad.py -> anchor_lightning.model.module",
            "anchor_lightning/data/bad.py -> anchor_lightning.model.module.AnchorLM",
            "anchor_lightning/paths.py -> anchor_lightning.checkpoint",
            "anchor_lightning/paths.py -> anchor_lightning.checkpoint.x",
        ]
        assert find_circle(unit_graph(package)) == ["checkpoint", "paths", "checkpoint"]
    finally:
        rules.PACKAGE = original


OUTSIDE = ("lab", "scripts", "tests")  # the experiments, the user-facing tools, the tests: never the product's needs


def imports_from_outside(package: Path) -> list[str]:
    return [
        f"{path.relative_to(package.parent)} -> {module}"
        for path in sorted(package.rglob("*.py"))
        for module in sorted(imports(path))
        if module.split(".")[0] in OUTSIDE
    ]


def test_the_package_never_imports_the_lab_the_scripts_or_the_tests():
    assert imports_from_outside(PACKAGE) == []


def test_the_outside_rule_sees_an_offender(tmp_path, monkeypatch):
    package = tmp_path / "anchor_lightning"
    (package / "eval").mkdir(parents=True)
    (package / "eval" / "bad.py").write_text("from lab.miniature import ruler_report\nimport scripts.summarize_run\n")
    monkeypatch.setattr("tests.test_architecture.PACKAGE", package)  # imports() names modules relative to PACKAGE
    assert imports_from_outside(package) == [
        "anchor_lightning/eval/bad.py -> lab.miniature",
        "anchor_lightning/eval/bad.py -> lab.miniature.ruler_report",
        "anchor_lightning/eval/bad.py -> scripts.summarize_run",
    ]


def test_every_warning_the_package_raises_is_a_run_warning():
    """A run's warnings print as one line (``warning: ...``, commands/__init__.py) only when they are
    ``RunWarning``s: every ``warnings.warn`` of the package names that category."""
    plain = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn"
            if called and ast.unparse(node.func) == "warnings.warn":
                category = [k.value for k in node.keywords if k.arg == "category"] + node.args[1:2]
                if not category or ast.unparse(category[0]) != "RunWarning":
                    plain.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not plain, plain

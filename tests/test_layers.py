"""The floors of the toolkit import only downward: synthetic/ ← identifiability/ ← smartclip/ ←
experiments/. Imports are read with ``ast`` from every statement of every module (inside
functions too), so a lazy import that points upward is caught as well as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("synthetic", "identifiability", "smartclip", "experiments")
EXPERIMENT_MODULES = {p.stem for p in (ROOT / "experiments").glob("*.py")}


def floor_of(module: str) -> str | None:
    """The floor a top-level import names; the experiments import each other by bare name."""
    top = module.split(".")[0]
    if top in FLOORS:
        return top
    return "experiments" if top in EXPERIMENT_MODULES else None


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_floor_of_names_packages_and_experiment_scripts():
    assert floor_of("smartclip.fit") == "smartclip"
    assert floor_of("sweep") == "experiments" and floor_of("numpy") is None


@pytest.mark.parametrize("floor", FLOORS[:-1])
def test_no_module_imports_a_floor_above_its_own(floor: str) -> None:
    above = set(FLOORS[FLOORS.index(floor) + 1 :])
    upward = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / floor).rglob("*.py")
        for name in imported(path)
        if floor_of(name) in above
    )
    assert not upward, upward

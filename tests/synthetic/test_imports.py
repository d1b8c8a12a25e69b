"""Tests for the import structure of ``synthetic/``: no circle, and nothing from the floors above.

Imports are read with ``ast`` from every statement of every module, including those inside
functions, so a lazy import that closes a circle is caught as well as a top-level one."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import synthetic

PACKAGE = Path(synthetic.__file__).parent
ABOVE = ("identifiability", "smartclip", "experiments")  # the floors built on synthetic/


def _module_name(path: Path) -> str:
    """The dotted name of a module file of ``synthetic/`` (``__init__.py`` names the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(source: str, module: str) -> set[str]:
    """Every module ``module``'s source imports, anywhere in it: ``import a.b`` gives ``a.b``;
    ``from a import b`` gives ``a.b`` when that is a module of ``synthetic/``, else ``a``;
    relative imports are resolved against ``module``'s package."""
    package = (
        module if MODULES.get(module, Path()).name == "__init__.py" else module.rpartition(".")[0]
    )
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(filter(None, (base, node.module)))
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    return found


def _graph() -> dict[str, set[str]]:
    """Each module of ``synthetic/`` -> the modules it imports (all of them, ours or not)."""
    return {
        name: _imported(path.read_text(encoding="utf-8"), name) for name, path in MODULES.items()
    }


def test_imports_are_found_at_top_level_inside_functions_and_relative() -> None:
    source = (
        "import numpy as np\n"
        "from . import scenes\n"
        "from .worlds import World\n"
        "def render():\n"
        "    from synthetic.scene_operators import MAX_K\n"
    )
    expected = {"numpy", "synthetic", "synthetic.scenes", "synthetic.worlds"}
    assert _imported(source, "synthetic.mixing") == expected | {"synthetic.scene_operators"}
    assert ("synthetic.scene_operators", "synthetic.scenes") in {
        (a, b) for a, imported in _graph().items() for b in imported
    }


def test_no_module_of_synthetic_imports_one_that_imports_it_back() -> None:
    edges = {a: {b for b in imported if b in MODULES} for a, imported in _graph().items()}
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import circle in synthetic/: {' -> '.join(error.args[1])}") from None


def test_synthetic_imports_nothing_from_the_floors_above() -> None:
    upward = {
        (module, name)
        for module, imported in _graph().items()
        for name in imported
        if name.split(".")[0] in ABOVE
    }
    assert not upward

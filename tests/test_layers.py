"""Imports run one way: data < features < env < assessor < agents (experiments are scripts).

The package maps ``rl_scaniqa.envs`` to the folder ``envs/`` and so on, which import-graph tools
cannot follow; this test reads every module's source with ``ast`` instead, names it by that
mapping, and fails on an import of a module from a layer above the importer's own (imports inside
functions included: a lazy upward import is still an upward dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = {"envs": "rl_scaniqa.envs", "assessor": "rl_scaniqa.assessor",
                   "agents": "rl_scaniqa.agents"}

#: Module-name prefixes of each layer, lowest first; the longest matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rl_scaniqa.envs.errors", "rl_scaniqa.envs.storage", "rl_scaniqa.envs.progress")),
    ("data", ("rl_scaniqa.envs.data",)),
    ("features", ("rl_scaniqa.envs.features",)),
    ("env", ("rl_scaniqa.envs",)),
    ("assessor", ("rl_scaniqa.assessor",)),
    ("agents", ("rl_scaniqa.agents",)),
]


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the layer that owns ``module`` (longest prefix wins)."""
    best, best_length = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    if best < 0:
        raise ValueError(f"{module} belongs to no layer")
    return best


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = [PACKAGE_FOLDERS[relative.parts[0]], *relative.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``rl_scaniqa`` import in ``source`` (relative ones resolved)."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from rl_scaniqa.envs.data import geometry`` imports the submodule.
            found += [(node.lineno, f"{target}.{alias.name}") if _is_module(f"{target}.{alias.name}")
                      else (node.lineno, target) for alias in node.names]
    return sorted((line, name) for line, name in found if name.startswith("rl_scaniqa."))


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "rl_scaniqa" or len(parts) < 2 or parts[1] not in PACKAGE_FOLDERS:
        return False
    folder = REPO.joinpath(parts[1], *parts[2:])
    return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()


def library_files() -> list[Path]:
    return sorted(p for folder in PACKAGE_FOLDERS for p in (REPO / folder).rglob("*.py"))


def test_every_library_module_has_a_layer():
    for path in library_files():
        layer_of(module_name(path))


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in library_files():
        module = module_name(path)
        own = layer_of(module)
        for line, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if layer_of(target) > own:
                upward.append(f"{path.relative_to(REPO)}:{line} ({LAYERS[own][0]}) imports "
                              f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_walker_sees_lazy_and_relative_upward_imports():
    """The walker must catch these, or the test above could never fail."""
    source = ("from .imageio import read_erp\n"
              "def f():\n    from rl_scaniqa.agents.scorer import Scorer\n    return Scorer\n"
              "import rl_scaniqa.assessor.model\n"
              "from rl_scaniqa.envs.features import cache\n")
    found = imported_modules(source, "rl_scaniqa.envs.data.geometry", is_package=False)
    assert found == [(1, "rl_scaniqa.envs.data.imageio"), (3, "rl_scaniqa.agents.scorer"),
                     (5, "rl_scaniqa.assessor.model"), (6, "rl_scaniqa.envs.features.cache")]
    own = layer_of("rl_scaniqa.envs.data.geometry")
    assert [layer_of(name) > own for _, name in found] == [False, True, True, True]


@pytest.mark.parametrize("module, layer", [
    ("rl_scaniqa.envs.errors", "base"), ("rl_scaniqa.envs.data.geometry", "data"),
    ("rl_scaniqa.envs.features.cache", "features"), ("rl_scaniqa.envs.panorama_env", "env"),
    ("rl_scaniqa.envs", "env"), ("rl_scaniqa.assessor.model", "assessor"),
    ("rl_scaniqa.agents.scorer", "agents"),
])
def test_layer_names(module, layer):
    assert LAYERS[layer_of(module)][0] == layer

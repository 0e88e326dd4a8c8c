"""The layering of the wheels: each imports only lower layers and third-party packages it declares."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"recis-core": ROOT / "cpp" / "python"} | {
    f"recis-{p.name.removeprefix('recis-')}": p / "src" for p in sorted((ROOT / "packages").glob("recis-*"))
}
PYPROJECTS = {"recis-core": ROOT / "cpp" / "pyproject.toml"} | {
    f"recis-{p.name.removeprefix('recis-')}": p / "pyproject.toml" for p in sorted((ROOT / "packages").glob("recis-*"))
}


def declared(dist: str) -> set[str]:
    project = tomllib.loads(PYPROJECTS[dist].read_text())["project"]
    extras = project.get("optional-dependencies", {})  # imported only where the extra is used
    deps = project["dependencies"] + [d for group in extras.values() for d in group]
    return {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for d in deps}


def imported_modules(src: Path) -> set[str]:
    names: set[str] = set()
    for file in src.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def test_every_package_is_laid_out_as_a_namespace_wheel():
    assert set(SOURCES) == {
        "recis-core",
        "recis-io",
        "recis-features",
        "recis-embedding",
        "recis-optim",
        "recis-serve",
        "recis-train",
    }
    for dist, src in SOURCES.items():
        layer = dist.removeprefix("recis-")
        assert (src / "recis" / layer / "__init__.py").is_file(), dist
        assert not (src / "recis" / "__init__.py").exists(), f"{dist} must not ship recis/__init__.py"


@pytest.mark.parametrize("dist", sorted(SOURCES))
def test_imports_are_declared_dependencies(dist):
    """recis.<layer> imports need recis-<layer> in the dependencies; so do third-party imports."""
    dists_of = metadata.packages_distributions()
    needed: set[str] = set()
    for module in imported_modules(SOURCES[dist]):
        top = module.split(".")[0]
        if top == "recis":
            layer = module.split(".")[1] if "." in module else None
            if layer and f"recis-{layer}" != dist:
                needed.add(f"recis-{layer}")
        elif top not in sys.stdlib_module_names and top != "__future__":
            needed.update(d.lower() for d in dists_of.get(top, [top]))
    missing = needed - declared(dist)
    assert not missing, f"{dist} imports {sorted(missing)} without declaring them in its pyproject.toml"


def test_lower_layers_never_depend_on_higher_ones():
    order = ["recis-core", "recis-io", "recis-features", "recis-embedding", "recis-optim", "recis-serve", "recis-train"]
    allowed = {  # the stack of ARCHITECTURE.md: io and features sit beside embedding, all on core
        "recis-core": set(),
        "recis-io": {"recis-core"},
        "recis-features": {"recis-core"},
        "recis-embedding": {"recis-core"},
        "recis-optim": {"recis-core", "recis-embedding"},
        "recis-serve": {"recis-core", "recis-io", "recis-features", "recis-embedding"},  # never the trainer
        "recis-train": set(order) - {"recis-train"},
    }
    for dist in order:
        internal = {d for d in declared(dist) if d.startswith("recis-")}
        assert internal <= allowed[dist], f"{dist} depends on {sorted(internal - allowed[dist])}"


def test_only_recis_core_touches_the_extension():
    """Kernels are reached through recis.core.kernels, which applies the core's thread count; a
    module calling `recis.core._C` directly could run on a stale one."""
    offenders = []
    for dist, src in SOURCES.items():
        if dist == "recis-core":
            continue
        for file in src.rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recis.core"):
                    names = [a.name for a in node.names]
                    if node.module.startswith("recis.core._C") or "_C" in names:
                        offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("recis.core._C") for a in node.names):
                    offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"import recis.core.kernels instead of recis.core._C: {offenders}"

"""The package's shape, checked: each subpackage is one layer and imports only from lower layers
(and, within itself, without cycles); readers of runs never import the trainer; every module says
in its docstring what idea it holds; and no module but the registry and the config knows a loss by
name. docs/architecture.md describes the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vaegen

PACKAGE = Path(vaegen.__file__).parent

# The layers, bottom to top. A module imports only from lower layers or from its own subpackage
# (the top-level base modules count as one layer); the top-level `pipeline` sits above report,
# below the command line.
LAYERS: dict[str, int] = {
    "base": 0,  # errors, _version, seeds, console, files, locks, tensorfiles
    "data": 1,
    "model": 2,
    "rundir": 3,
    "training": 4,
    "sampling": 5,
    "evaluation": 6,
    "report": 7,
    "pipeline": 8,
    "cli": 9,
    "__init__": 10,
    "__main__": 10,
}
BASE = ("errors", "_version", "seeds", "console", "files", "locks", "tensorfiles")
# Modules that read runs and must never import the trainer (training.loop).
READERS = ("sampling", "evaluation", "report")


def layer_of(module: str) -> str:
    """The layer of a dotted module name within the package ("training.loop" -> "training")."""
    top = module.split(".")[0]
    return "base" if top in BASE else top


def modules() -> dict[str, Path]:
    """Dotted names within the package ("report.payload") -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """The vaegen modules `name` imports, anywhere in the file (function-level imports too)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found = set()
    known = set(modules())
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("vaegen"):
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                base = package[: len(package) - (node.level - 1)] + (
                    node.module.split(".") if node.module else []
                )
            target = ".".join(base)
            for alias in node.names:  # `from . import run` imports the module run
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vaegen."):
                    found.add(alias.name.removeprefix("vaegen."))
    return {m for m in found if m and m != name}


def test_every_module_has_a_layer():
    assert sorted(m for m in modules() if layer_of(m) not in LAYERS) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_layers_import_only_downward(name):
    own = LAYERS[layer_of(name)]
    upward = sorted(
        m
        for m in imports(name, modules()[name])
        if LAYERS[layer_of(m)] > own
        or (LAYERS[layer_of(m)] == own and layer_of(m) != layer_of(name))
    )
    assert upward == [], f"{name} ({layer_of(name)}) imports {upward}"


def test_no_subpackage_imports_itself_in_a_cycle():
    """Within a layer, modules import each other only one way round (a cycle would make the
    order of imports decide what works)."""
    graph = {
        n: {m for m in imports(n, p) if layer_of(m) == layer_of(n)} for n, p in modules().items()
    }
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        assert state.get(n) != 1, f"import cycle: {' -> '.join([*path, n])}"
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            visit(m, [*path, n])
        state[n] = 2

    for n in sorted(graph):
        visit(n, [])


def test_readers_of_runs_never_import_the_trainer():
    for name, path in modules().items():
        if layer_of(name) in READERS:
            assert "training.loop" not in imports(name, path), name


def test_the_import_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "estimators.py"
    fake.write_text("from ..training.loop import train\nfrom .. import rundir\n")
    assert imports("evaluation.estimators", fake) == {"training.loop", "rundir"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_names_its_idea_in_its_docstring(name):
    """The cohesion rule (docs/development.md): a module holds one idea, named in the first line
    of its docstring; a second idea starts a module of its own. Size decides nothing."""
    tree = ast.parse(modules()[name].read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 4, f"{name}: no docstring naming the module's idea"


def test_no_module_but_the_registry_and_the_config_names_a_loss():
    """A loss name as a string in code (not in a docstring) anywhere else would be a branch on a
    name that the registry exists to replace."""
    names = {"seed", "gaussian", "bernoulli", "gaussian-sigma", "gaussian-pixel-sigma"}
    offenders = []
    for name, path in modules().items():
        if name in ("model.likelihoods", "rundir.config"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for c in [node.left, *node.comparators]:
                    if isinstance(c, ast.Constant) and c.value in names:
                        offenders.append(f"{name}:{node.lineno} compares with {c.value!r}")
            elif (
                isinstance(node, ast.Constant)
                and id(node) not in docstrings
                and node.value in names - {"seed"}  # "seed" is also the random seed's key
            ):
                offenders.append(f"{name}:{node.lineno} {node.value!r}")
    assert offenders == []

"""The package's shape, checked: layers import only downward, no module passes 400 lines, and no
module but the registry and the config knows a loss by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vaegen

PACKAGE = Path(vaegen.__file__).parent

# Layer of each module: a module imports only modules of lower layers (DESIGN.md: data -> models
# and losses -> train (checkpoint) -> evaluate / generate / plots -> report -> cli).
LAYERS: dict[str, int] = {
    "errors": 0, "_version": 0, "seeds": 0,
    "_io": 1, "files": 1,
    "locks": 2, "idx": 2, "distributed": 2, "classnames": 2, "splits": 2, "foldercache": 2, "memory": 2,
    "datasets": 3, "images": 3, "npz": 3,
    "data": 4, "models": 4, "losses": 4,
    "config": 5, "checkpoint": 5, "writers": 5, "fast_step": 5, "cuda_graph": 5, "datainfo": 5,
    "runfolder": 6,
    "run": 7, "step": 7, "collapse": 7, "trainset": 7,
    "train": 8,
    "metrics": 9, "classifier": 9, "mixture": 9, "posterior": 9,
    "priors": 10,
    "generate": 11, "evaluate.features": 11,
    "plots": 12, "evaluate.context": 12,
    "evaluate.likelihood": 13, "evaluate.latent": 13, "evaluate.samples": 13,
    "evaluate.synthetic": 13, "evaluate": 14,
    "scorecard": 15,
    "report.tables": 15, "report.render": 16, "report.payload": 17, "report": 18,
    "cli_data": 18, "cli_prior": 18,
    "pipeline": 19,
    "cli": 20,
    "__init__": 21, "__main__": 21,
}  # fmt: skip
# Modules that read runs and must never import the trainer.
READERS = ("generate", "plots", "metrics", "evaluate", "scorecard", "report", "priors")
MAX_LINES = 400


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
    assert sorted(set(modules()) - set(LAYERS)) == []


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_import_only_downward(name):
    path = modules().get(name)
    if path is None:
        pytest.skip(f"{name} is not a module of this version")
    upward = sorted(m for m in imports(name, path) if LAYERS.get(m, 99) >= LAYERS[name])
    assert upward == [], f"{name} (layer {LAYERS[name]}) imports {upward}"


def test_readers_of_runs_never_import_the_trainer():
    for name, path in modules().items():
        if name.split(".")[0] in READERS:
            assert "train" not in imports(name, path), name


def test_the_import_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "metrics.py"
    fake.write_text("from .train import train\nfrom . import run as rundir\n")
    assert imports("metrics", fake) == {"train", "run"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_no_module_but_the_registry_and_the_config_names_a_loss():
    """A loss name as a string in code (not in a docstring) anywhere else would be a branch on a
    name that the registry exists to replace."""
    names = {"seed", "gaussian", "bernoulli", "gaussian-sigma", "gaussian-pixel-sigma"}
    offenders = []
    for name, path in modules().items():
        if name in ("losses", "config"):
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

"""The package's shape: a light core, layers without cycles, no reach into private names."""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("flax", "orbax", "matplotlib", "PIL", "tqdm")


def _python(code: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, **kwargs
    )


@pytest.mark.subprocess
def test_core_imports_no_heavy_dependency():
    """``import relaxjax`` and its transforms, schedules, Parle, pde and cpu load none of
    flax, orbax, matplotlib, pillow or tqdm (a fresh interpreter)."""
    code = f"""
import sys
import relaxjax
from relaxjax import core, cpu, pde
from relaxjax.core import alias, keys, mesh, noise, parle, relaxation, schedules
tx = relaxjax.entropy_sgd(0.1, gamma=1.0, num_steps=2)
relaxjax.local_entropy(1.0), relaxjax.hopf_lax(1.0), relaxjax.scoping(1.0, 1e-3)
relaxjax.parle(0.1, 1.0, 0.01, 2)
loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
print(','.join(loaded))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the core loaded {result.stdout.strip()}"


@pytest.mark.subprocess
def test_subpackages_load_on_first_access():
    result = _python(
        "import sys, relaxjax; assert 'relaxjax.models' not in sys.modules; "
        "relaxjax.models.get_model; assert 'flax' in sys.modules; print(relaxjax.pde.__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "relaxjax.pde"


@pytest.mark.subprocess
def test_a_checkout_folder_named_relaxjax_does_not_shadow_the_install(tmp_path):
    """Run from the parent of a folder called ``relaxjax`` (as after ``git clone`` into
    ``relaxjax/``), ``import relaxjax`` still finds the installed package, not an empty
    namespace package made of that folder."""
    (tmp_path / "relaxjax" / "docs").mkdir(parents=True)  # a checkout-like folder
    result = _python("import relaxjax; print(relaxjax.__file__); relaxjax.local_entropy", tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == REPO / "relaxjax" / "__init__.py"


@pytest.mark.subprocess
def test_layers_contract_holds():
    """The layer contract of pyproject.toml ([tool.importlinter]): lower layers never import
    higher ones, and the layers are free of cycles."""
    lint = Path(sys.executable).parent / "lint-imports"
    lint = str(lint) if lint.exists() else shutil.which("lint-imports")
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _modules(*roots: str) -> list[Path]:
    return sorted(
        p for root in roots for p in (REPO / root).rglob("*.py") if "results" not in p.parts
    )


def _relaxjax_imports(tree: ast.AST):
    """``(module, name, bound)`` for every relaxjax import in ``tree``: ``from module import
    name`` (``name`` the imported name) or ``import module`` (``name`` None), ``bound`` the
    local name it binds."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("relaxjax"):
            for alias in node.names:
                yield node.module, alias.name, alias.asname or alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("relaxjax"):
                    yield alias.name, None, alias.asname or alias.name.split(".")[0]


def _private_uses(path: Path) -> list[str]:
    """``from m import _x`` and ``m._x`` (m a relaxjax module) in one file."""
    tree = ast.parse(path.read_text())
    modules = set()  # local names bound to relaxjax modules
    found = []
    for module, name, bound in _relaxjax_imports(tree):
        if name is not None and name.startswith("_"):
            found.append(f"from {module} import {name}")
        else:
            modules.add(bound)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(ast.unparse(node))
    return [f"{path.relative_to(REPO)}: {use}" for use in found]


def test_no_module_uses_another_modules_private_names():
    uses = [u for path in _modules("relaxjax", "benchmarks") for u in _private_uses(path)]
    assert not uses, "\n".join(uses)


# Every public factory takes its options as keywords only (after ``*``).
def _factories():
    import relaxjax
    from relaxjax import diagnostics, models, pde, train
    from relaxjax.data import load_dataset

    yield from (getattr(relaxjax, name) for name in relaxjax.__all__)
    yield from (models.get_model, models.get_module, models.functional, load_dataset)
    yield from (train.make_train_step, train.make_optimizer, train.train)
    yield from (diagnostics.hessian_top_eigenvalues, diagnostics.hessian_spectral_density)
    yield from (diagnostics.local_entropy_estimate, pde.uniform_grid)


@pytest.mark.parametrize(
    "factory", [f for f in _factories() if inspect.isfunction(f)], ids=lambda f: f.__name__
)
def test_public_factories_take_options_by_keyword(factory):
    positional_with_default = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    ]
    assert not positional_with_default, f"{factory.__name__}: {positional_with_default}"


def _import_graph() -> dict[str, set[str]]:
    """module -> the relaxjax modules it imports (anywhere in it, lazy imports included); a
    package is its ``__init__``; ``from p import m`` with ``p.m`` a module imports ``p.m``."""
    root = REPO / "relaxjax"
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        imported = set()
        for module, imported_name, _ in _relaxjax_imports(ast.parse(path.read_text())):
            child = module if imported_name is None else f"{module}.{imported_name}"
            imported.add(child if child in names else module)
        graph[name] = {m for m in imported if m in names and m != name}
    return graph


def test_no_import_cycles_between_modules():
    """No module of relaxjax imports itself through others (train ↔ train_parle was one)."""
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 40 and graph["relaxjax.train.loop"]  # the graph is not empty
    assert not cycles, "\n".join(cycles)

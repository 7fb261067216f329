"""The package's top level is the one public surface, and the README's Python uses nothing else."""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import sys
from pathlib import Path

import pytest

import batch_pipelines
from batch_pipelines.emulator.testing import run_emulator

ROOT = Path(__file__).resolve().parents[1]
README_EMULATOR_URL = "http://127.0.0.1:8765"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_python_blocks() -> list[tuple[int, str]]:
    """Each ```python block of the README with the line it starts on."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in _PYTHON_BLOCK.finditer(text)]


def _ids(blocks: list[tuple[int, str]]) -> list[str]:
    return [f"README.md:{line}" for line, _ in blocks]


BLOCKS = readme_python_blocks()


def _bound_and_used(tree: ast.AST) -> tuple[set[str], set[str]]:
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound, used


def test_readme_has_python_blocks_that_use_the_package():
    """The README shows Python that imports this package (so the tests below check something)."""
    imported = {
        node.module
        for _, code in BLOCKS
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "batch_pipelines" in imported


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=_ids(BLOCKS))
def test_readme_imports_only_from_the_top_level(line, code):
    """Every name the README imports from this package comes from `batch_pipelines` itself and is in __all__."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batch_pipelines"):
            assert node.module == "batch_pipelines", f"README.md:{line} imports from {node.module}"
            for alias in node.names:
                assert alias.name in batch_pipelines.__all__, f"README.md:{line}: {alias.name} is not public"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("batch_pipelines."), f"README.md:{line} imports {alias.name}"


@pytest.fixture(scope="module")
def readme_emulator():
    """The emulator the README's blocks talk to (they name `make emulator`'s address), on a fast clock."""
    with run_emulator(time_scale=600.0) as emulator:
        yield emulator


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=_ids(BLOCKS))
def test_readme_blocks_import_what_they_use_and_run(line, code, readme_emulator, tmp_path, monkeypatch):
    """Each README block names its imports (no free names) and runs as written against a live emulator."""
    tree = ast.parse(code)
    bound, used = _bound_and_used(tree)
    free = used - bound - set(dir(builtins))
    assert not free, f"README.md:{line} uses {sorted(free)} without importing them"
    # The blocks address `make emulator` on its default port; point them at this test's emulator,
    # and keep default files (the ledger under $DAGSTER_HOME) in a temporary folder.
    tree = ast.parse(code.replace(README_EMULATOR_URL, readme_emulator.base_url))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # dont_inherit: this module's `from __future__ import annotations` would break the asset's annotated context.
    exec(compile(tree, f"README.md:{line}", "exec", dont_inherit=True), {"__name__": "readme_block"})


@pytest.mark.parametrize("name", batch_pipelines.__all__)
def test_every_public_name_resolves(name):
    """Each name in __all__ is importable from the top level (the Dagster ones on first use)."""
    namespace: dict[str, object] = {}
    exec(f"from batch_pipelines import {name}", namespace)
    assert namespace[name] is getattr(batch_pipelines, name)


def test_unknown_name_is_an_attribute_error():
    """A name that is not public raises AttributeError (so hasattr and typos behave)."""
    assert not hasattr(batch_pipelines, "Gateway")
    with pytest.raises(ImportError):
        exec("from batch_pipelines import Gateway", {})


def test_core_values_import_light():
    """Importing the package and its core values imports neither Dagster nor SQLAlchemy (the emulator stays light)."""
    code = (
        "import sys, batch_pipelines\n"
        "from batch_pipelines import PriceBook, Usage, Endpoint\n"
        "assert 'dagster' not in sys.modules and 'sqlalchemy' not in sys.modules, 'heavy import'\n"
        "from batch_pipelines import BatchGatewayResource\n"
        "assert 'dagster' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

"""The package's layering, checked on its source: what docs/architecture.md promises.

- No private name (`_rule`) is imported out of a public module of another file: a helper two
  public modules need lives in a `_private` module of its own.
- Nothing inside the package imports the package top (`import xai_jax`, or `from xai_jax import
  name` for a name that is not a submodule) except the demo and the command line.
- Every public module says what it exports (`__all__`).
- `import xai_jax` loads jax, numpy and the package, not haiku, flax, equinox, scikit-learn, tqdm
  or matplotlib.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xai_jax"
MODULES = sorted(PACKAGE.glob("*.py"))
SUBMODULES = {p.stem for p in MODULES}
MAY_IMPORT_TOP = {"__main__", "_demo"}


def _is_public(module: str) -> bool:
    return module.startswith("xai_jax.") and not module.rsplit(".", 1)[1].startswith("_")


def private_imports(path: Path) -> list[str]:
    """`module:line from xai_jax.public import _private` for every such import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and _is_public(node.module):
            if node.module == f"xai_jax.{path.stem}":
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(
                        f"{path.name}:{node.lineno} from {node.module} import {alias.name}"
                    )
    return found


def top_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name == "xai_jax" for a in node.names):
            found.append(f"{path.name}:{node.lineno} import xai_jax")
        if isinstance(node, ast.ImportFrom) and node.module == "xai_jax" and node.level == 0:
            names = [a.name for a in node.names if a.name not in SUBMODULES]
            if names:
                found.append(f"{path.name}:{node.lineno} from xai_jax import {', '.join(names)}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_from_a_public_module(path):
    assert private_imports(path) == []


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if p.stem not in MAY_IMPORT_TOP | {"__init__"}],
    ids=lambda p: p.name,
)
def test_no_import_of_the_package_top(path):
    assert top_imports(path) == []


@pytest.mark.parametrize(
    "path", [p for p in MODULES if not p.stem.startswith("_")], ids=lambda p: p.name
)
def test_public_module_declares_all(path):
    tree = ast.parse(path.read_text())
    names = [
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    ]
    assert "__all__" in names
    module = __import__(f"xai_jax.{path.stem}", fromlist=["__all__"])
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_the_checks_see_what_they_forbid(tmp_path):
    """The AST checks flag the forms they are meant to (they would fail on the old code)."""
    bad = tmp_path / "integrated_gradients.py"
    bad.write_text(
        "from xai_jax.quadrature import _rule, check_rule\n"
        "from xai_jax._chunks import run\n"
        "import xai_jax\n"
        "from xai_jax import _chunks, quadrature\n"
    )
    assert private_imports(bad) == [
        "integrated_gradients.py:1 from xai_jax.quadrature import _rule"
    ]
    assert top_imports(bad) == ["integrated_gradients.py:3 import xai_jax"]


def test_import_is_light():
    code = (
        "import sys, xai_jax; "
        "print([m for m in ('haiku', 'flax', 'equinox', 'sklearn', 'tqdm', 'matplotlib') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(os.environ.get("XAI_TYPECHECK", "1") == "0", reason="XAI_TYPECHECK=0")
def test_annotations_are_checked_in_the_suite():
    """conftest installs the jaxtyping import hook before xai_jax loads: a call that breaks an
    annotation fails with the checker's error (outside `pytest.raises`, where it stands aside)."""
    import jaxtyping
    import numpy as np

    import xai_jax

    try:
        xai_jax.pairwise_distances(np.ones((2, 3), np.float32), metric=3)
    except jaxtyping.TypeCheckError as error:
        assert "metric" in str(error)
    else:
        raise AssertionError("the annotation of metric was not checked")

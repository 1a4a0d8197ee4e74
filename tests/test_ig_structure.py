"""The integrated-gradients family's structure: typed operands, one module per kind of method.

- No kernel reads its arrays out of a string-keyed dict (`ops["x"]`): operands and configs are
  NamedTuples, so a misspelt field fails at once and each variant's static options are its own.
- Every public name stays importable from `xai_jax.integrated_gradients`, where it was first,
  and is the same object as in its own module and at the package top.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import xai_jax

PACKAGE = Path(__file__).resolve().parent.parent / "xai_jax"
FAMILY = ["integrated_gradients.py", "layer_attribution.py", "noise_tunnel.py", "_paths.py"]
HOMES = {
    "integrated_gradients": "xai_jax.integrated_gradients",
    "expected_gradients": "xai_jax.integrated_gradients",
    "layer_integrated_gradients": "xai_jax.layer_attribution",
    "layer_conductance": "xai_jax.layer_attribution",
    "neuron_conductance": "xai_jax.layer_attribution",
    "smoothgrad": "xai_jax.noise_tunnel",
    "NT_TYPES": "xai_jax.noise_tunnel",
}


def string_keyed_reads(source: str) -> list[str]:
    """`name["key"]` subscripts and `{"key": ...}` dict displays in `source`, with line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            found.append(f"{node.lineno}: [{node.slice.value!r}]")
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys
        ):
            found.append(f"{node.lineno}: {{...}}")
    return found


@pytest.mark.parametrize("name", FAMILY)
def test_no_string_keyed_operands(name):
    assert string_keyed_reads((PACKAGE / name).read_text()) == []


def test_the_check_sees_a_dict_of_operands():
    old = 'def kernel(c, ops):\n    return ops["alphas"][c]\nops = {"x": 1}\n'
    assert sorted(string_keyed_reads(old)) == ["2: ['alphas']", "3: {...}"]


@pytest.mark.parametrize("name", sorted(HOMES))
def test_every_name_importable_from_its_old_home(name):
    old_home = sys.modules["xai_jax.integrated_gradients"]
    home = importlib.import_module(HOMES[name])
    assert name in old_home.__all__ and name in home.__all__
    assert getattr(old_home, name) is getattr(home, name)
    if name != "NT_TYPES":
        assert getattr(xai_jax, name) is getattr(home, name)

"""The README's Python examples run as written and show what the text around them says."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import lime

README = Path(__file__).resolve().parent.parent / "README.md"


def _run_blocks() -> dict[str, dict]:
    """Each ```python block executed in its own namespace, keyed by the section it is in."""
    namespaces = {}
    for section in re.split(r"^## ", README.read_text(), flags=re.MULTILINE)[1:]:
        blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
        for i, block in enumerate(blocks):
            namespace = {}
            with jax.numpy_rank_promotion("allow"):  # users' code need not be strict
                exec(compile(block, str(README), "exec"), namespace)
            namespaces[f"{section.splitlines()[0]}/{i}"] = namespace
    return namespaces


def test_readme_examples_run():
    namespaces = _run_blocks()
    assert list(namespaces) == [
        "Quickstart/0",
        "Inside `jit`, `vmap` and `grad`/0",
        "Model libraries/0",
        "Model libraries/1",
        "Model libraries/2",
        "Multi-device use/0",
    ]

    quick = namespaces["Quickstart/0"]
    model, x = quick["model"], quick["x"]
    gap = model(x)[:, 2] - model(jnp.zeros_like(x))[:, 2]  # f(x) - f(baseline 0), class 2
    np.testing.assert_allclose(quick["ig"].sum(1), gap, atol=1e-4)  # completeness
    # the background is zeros: efficiency makes the Shapley values sum to the same gap
    np.testing.assert_allclose(quick["shap_values"].sum(1), gap, atol=1e-5)
    # LIME's local slopes follow the model's gradient
    grad = jax.vmap(jax.grad(lambda v: model(v[None])[0, 2]))(x)
    coef = quick["surrogate"].coef
    assert coef.shape == (8, 4)
    assert np.corrcoef(np.ravel(coef), np.ravel(grad))[0, 1] > 0.7

    for i in range(3):  # flax linen, flax nnx, equinox: layer IG complete on a layer of 16
        libraries = namespaces[f"Model libraries/{i}"]
        assert libraries["attr"].shape == (8, 16)
        assert float(jnp.max(jnp.abs(libraries["delta"]))) < 1e-3

    grads = namespaces["Inside `jit`, `vmap` and `grad`/0"]["grads"]
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(grads))

    sharded = namespaces["Multi-device use/0"]
    model, x, t = sharded["model"], sharded["x"], sharded["targets"]
    np.testing.assert_array_equal(
        sharded["attr"], sharded["ig_rows"](x, t)
    )  # as the comment in the README says
    single = lime(jax.random.key(2), model, x, num_samples=2000, target=1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), sharded["res"], single)

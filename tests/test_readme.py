"""The README's Python examples run as written."""

import re
from pathlib import Path

import jax
import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    namespaces = []
    for block in blocks:
        namespaces.append({})
        with jax.numpy_rank_promotion("allow"):  # users' code need not be strict
            exec(compile(block, str(README), "exec"), namespaces[-1])
    lime_example, prior_example = namespaces
    coefs = np.asarray(lime_example["coefs"])
    # the black box is tanh(x . [0, 1, 2, 3]) around 0: LIME's slopes follow [0, 1, 2, 3]
    assert coefs.shape == (8, 4)
    assert np.all(np.diff(coefs.mean(0)) > 0)
    grads = prior_example["grads"]
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(grads))

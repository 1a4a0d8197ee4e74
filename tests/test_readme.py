"""The README's Python examples run as written."""

import re
from pathlib import Path

import jax
import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        namespace = {}
        with jax.numpy_rank_promotion("allow"):  # users' code need not be strict
            exec(compile(block, str(README), "exec"), namespace)
    coefs = np.asarray(namespace["coefs"])
    # the black box is tanh(x . [0, 1, 2, 3]) around 0: LIME's slopes follow [0, 1, 2, 3]
    assert coefs.shape == (8, 4)
    assert np.all(np.diff(coefs.mean(0)) > 0)

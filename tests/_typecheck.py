"""The runtime checker of the package's jaxtyping annotations (installed by `tests/conftest.py`).

beartype with PEP 484's numeric tower: an `int` is a valid `float` argument, as in the rest of
Python's typing.
"""

import beartype

_CONF = beartype.BeartypeConf(is_pep484_tower=True)


def checker(fn, *args, **kwargs):
    return beartype.beartype(fn, *args, conf=_CONF, **kwargs)

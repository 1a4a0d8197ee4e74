"""The runtime checker of the package's jaxtyping annotations (installed by `tests/conftest.py`).

beartype with PEP 484's numeric tower: an `int` is a valid `float` argument, as in the rest of
Python's typing. The annotations are the contract for valid calls, checked on every call the
suite makes; inside `pytest.raises` a test feeds input that breaks the contract on purpose, to
check the package's own error (the one a user, who runs no checker, sees), so the checker stands
aside there.
"""

import contextlib

import beartype
import jaxtyping
import pytest

_CONF = beartype.BeartypeConf(is_pep484_tower=True)


def checker(fn, *args, **kwargs):
    return beartype.beartype(fn, *args, conf=_CONF, **kwargs)


def unchecked_inside_pytest_raises() -> None:
    """Make `pytest.raises` (both forms) switch the annotation checker off while it runs."""
    raises = pytest.raises
    depth = [0]

    @contextlib.contextmanager
    def unchecked():
        depth[0] += 1
        jaxtyping.config.update("jaxtyping_disable", True)
        try:
            yield
        finally:
            depth[0] -= 1
            jaxtyping.config.update("jaxtyping_disable", depth[0] > 0)

    @contextlib.contextmanager
    def raises_context(expected, **kwargs):
        with unchecked(), raises(expected, **kwargs) as info:
            yield info

    def raises_unchecked(expected, *args, **kwargs):
        if args:  # pytest.raises(Error, function, *args): the call form
            with unchecked():
                return raises(expected, *args, **kwargs)
        return raises_context(expected, **kwargs)

    pytest.raises = raises_unchecked

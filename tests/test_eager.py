"""Repeated eager calls (`_eager`): after the first call's checks, a call with the same function,
options and argument shapes re-checks the values and runs one compiled program, with the
numbers and the errors of the op-by-op path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    _eager,
    _incremental,
    feature_ablation,
    feature_permutation,
    input_x_gradient,
    occlusion,
    saliency,
    shapley_value_sampling,
    shapley_values,
)

W = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))


def _model(z):  # nonlinear, 3 outputs
    return jnp.tanh(z @ W) + z[:, :3] * z[:, 3:]


def _x(seed=1, n=4):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


MASK = np.array([0, 0, 1, 1, 2, 2])
KEY = jax.random.key(3)
CALLS = {
    "occlusion": lambda x, **kw: occlusion(_model, x, sliding_window_shapes=(2,), **kw),
    "feature_ablation": lambda x, **kw: feature_ablation(_model, x, feature_mask=MASK, **kw),
    "shapley_values": lambda x, **kw: shapley_values(_model, x, feature_mask=MASK, **kw),
    "shapley_value_sampling": lambda x, **kw: shapley_value_sampling(
        KEY, _model, x, feature_mask=MASK, n_samples=4, **kw
    ),
    "feature_permutation": lambda x, **kw: feature_permutation(KEY, _model, x, **kw),
    "saliency": lambda x, **kw: saliency(_model, x, **kw),
    "input_x_gradient": lambda x, **kw: input_x_gradient(_model, x, **kw),
}
NO_BASELINES = {"feature_permutation", "saliency", "input_x_gradient"}


def _op_by_op(monkeypatch, call, x, **kw):
    """The method with the compiled path off (every call prepares and runs op by op)."""
    with monkeypatch.context() as m:
        m.setattr(_eager, "call", lambda prepare, fn, arrays, statics: prepare(
            fn, **arrays, **statics).run())  # fmt: skip
        return call(x, **kw)


@pytest.mark.parametrize("name", CALLS)
def test_repeated_calls_equal_the_op_by_op_path(monkeypatch, name):
    call = CALLS[name]
    target = np.array([0, 2, 1, 0])
    first, second = call(_x(), target=target), call(_x(), target=target)
    third = call(_x(2), target=target)  # new values, same signature: the compiled program
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    for ours, x in ((first, _x()), (third, _x(2))):
        ref = _op_by_op(monkeypatch, call, x, target=target)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CALLS)
def test_a_planned_call_still_rejects_bad_values(name):
    call = CALLS[name]
    target = np.array([0, 2, 1, 0])
    call(_x(), target=target)  # the plan for this signature
    bad = _x()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf .* at index \(1, 2\)"):
        call(bad, target=target)
    with pytest.raises(ValueError, match=r"target out of range .* rows \[3\]"):
        call(_x(), target=np.array([0, 2, 1, 3]))
    if name not in NO_BASELINES:
        with pytest.raises(ValueError, match="baselines contains NaN or inf"):
            call(_x(), target=target, baselines=float("nan"))
    # float64 host data is checked in the dtype it gets: 1e39 is inf in float32
    call(_x().astype(np.float64), target=target)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        call(_x().astype(np.float64) * 1e39, target=target)


def test_options_and_the_incremental_switch_are_part_of_the_signature(monkeypatch):
    x, t = _x(), np.array([0, 2, 1, 0])
    a = feature_ablation(_model, x, target=t, feature_mask=MASK)
    b = feature_ablation(_model, x, target=t, feature_mask=np.array([0, 1, 1, 1, 2, 2]))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # a mask is hashed by value
    np.testing.assert_array_equal(
        np.asarray(a), np.asarray(feature_ablation(_model, x, target=t, feature_mask=MASK.copy()))
    )

    def cnn(z):
        w = jnp.ones((2, 1, 3, 3), z.dtype)
        h = jax.lax.conv_general_dilated(z, w, (1, 1), "VALID")
        return jnp.tanh(h).reshape(len(z), -1) @ jnp.ones((2 * 6 * 6, 2), z.dtype)

    xs = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    seen = []
    real = _incremental.occluded_outputs
    monkeypatch.setattr(_incremental, "occluded_outputs", lambda *a: seen.append(1) or real(*a))
    kw = dict(sliding_window_shapes=(1, 2, 2), target=0)
    on = occlusion(cnn, xs, **kw)
    monkeypatch.setattr(_incremental, "ENABLED", False)
    count = len(seen)
    off = occlusion(cnn, xs, **kw)  # a new program: the full rows, not the cached boxes
    assert len(seen) == count
    np.testing.assert_allclose(np.asarray(on), np.asarray(off), rtol=1e-5, atol=1e-6)


def test_numpy_black_boxes_and_several_chunks_run_op_by_op():
    calls = []

    def host(z):
        calls.append(len(z))
        return np.tanh(np.asarray(z) @ np.asarray(W))

    x, t = _x(), np.array([0, 2, 1, 0])
    for _ in range(2):
        feature_ablation(host, x, target=t, feature_mask=MASK)
    chunked = [feature_ablation(_model, x, target=t, batch_size=4) for _ in range(2)]
    np.testing.assert_array_equal(np.asarray(chunked[0]), np.asarray(chunked[1]))
    assert not any(key[1] is host for key in _eager._PLANS)
    assert calls[-4:] == [2, 16, 2, 16]  # each call: the probe, then its 16 rows
    assert not any(
        dict(key[2]).get("batch_size") == 4 and key[1] is _model for key in _eager._PLANS
    )


def test_traced_arguments_and_unhashable_options_bypass_the_plans():
    x, t = _x(n=7), np.arange(7) % 3  # a batch size no other test uses
    before = len(_eager._PLANS)
    jax.jit(lambda z: feature_ablation(_model, z, target=t))(x)
    jax.vmap(lambda z: feature_ablation(_model, z[None], target=t[:1]))(x)
    assert len(_eager._PLANS) == before
    occlusion(_model, x, sliding_window_shapes=[2], target=t)  # a list option: frozen
    occlusion(_model, x, sliding_window_shapes=(2,), target=t)  # the same signature
    assert len(_eager._PLANS) == before + 1
    out = feature_ablation(_model, x, target=t, forward_kwargs={})  # an empty dict: an array arg
    assert out.shape == x.shape

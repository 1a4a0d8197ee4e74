"""Float hyper-parameters are traced values, never compile-time constants.

For every public float hyper-parameter (`kernel_width`, `alpha`, `scale`, `stdev`, `c`, `kappa`,
`gamma`, `eta`, `beta`, `eps`, `mu`, ...):

- under the caller's `jit`, with the hyper-parameter an argument, two values share one trace and
  one compiled program, and each gives the numbers of an eager call with that value (the value
  is used, not frozen at the first one);
- eagerly, a second call with another value traces and compiles nothing (the package's own
  compiled pieces take the value as an operand, not as a static argument).

Shapes, counts and method names (`num_samples`, `n_steps`, `method`, `feature_selection`, ...)
are static: they decide shapes and programs, and another value compiles another program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax._src import dispatch  # the names of the trace and compile events

import xai_jax
from xai_jax import (
    aoexpgrad,
    bernoulli_perturbation,
    cem_loss,
    contrastive_explanation,
    elastic_net_fista,
    expected_gradients,
    exponential_kernel,
    gaussian_perturbation,
    gradient_shap,
    integrated_gradients,
    lime,
    numerical_gradient,
    smoothgrad,
    urv_gradient,
    weighted_ridge,
)

_rng = np.random.default_rng(7)


def _normal(*shape):
    return jnp.asarray(_rng.standard_normal(shape), jnp.float32)


_W = _normal(5, 3)
_X = _normal(3, 5)
_D = jnp.abs(_normal(4, 6))
_Z = _normal(8, 5)
_Y = _normal(8)
_WEIGHTS = jnp.abs(_normal(8)) + 0.1
_KEY = jax.random.key(0)


def _mlp(x):
    return jax.nn.softmax(jnp.tanh(x @ _W))


def _scalar(v):  # one point [5] -> a scalar
    return jnp.sum(jnp.tanh(v @ _W))


def _ig(v):  # an attribution function for the noise tunnel
    return integrated_gradients(_mlp, v, target=1, n_steps=4)


def _loss(v):
    return jnp.sum((v - 0.3) ** 2)


_SGD = optax.sgd(0.1)  # one optimizer object, as a user holds it (CEM compiles per optimizer)


def _descend(optimizer, steps=4):
    x = _X[0]
    state = optimizer.init(x)
    for _ in range(steps):
        updates, state = optimizer.update(2 * (x - 0.5), state, x)
        x = optax.apply_updates(x, updates)
    return x


def _cem(**hyper):  # PP: the hinge sits below zero, where kappa clamps it
    loss = cem_loss("PP", _mlp, _X[0], autoencoder=lambda v: 0.9 * v, **hyper)
    delta = 0.9 * _X[0]  # keeps the class: margin > 0
    return loss(delta), jax.grad(loss)(delta)


@dataclasses.dataclass(frozen=True)
class Hyper:
    name: str  # function.hyper-parameter
    call: Callable  # value -> pytree of arrays
    values: tuple[float, float]

    def __str__(self):
        return self.name


HYPERS = [
    Hyper("exponential_kernel.kernel_width", lambda v: exponential_kernel(_D, v), (0.5, 2.0)),
    Hyper("gaussian_perturbation.scale",
          lambda v: gaussian_perturbation(_KEY, _X[0], 6, scale=v), (0.5, 2.0)),
    Hyper("bernoulli_perturbation.p",
          lambda v: bernoulli_perturbation(_KEY, _X[0], 6, p=v), (0.3, 0.7)),
    Hyper("bernoulli_perturbation.baseline",
          lambda v: bernoulli_perturbation(_KEY, _X[0], 6, baseline=v), (0.0, 1.5)),
    Hyper("weighted_ridge.alpha", lambda v: weighted_ridge(_Z, _Y, _WEIGHTS, alpha=v), (0.1, 3.0)),
    Hyper("numerical_gradient.eps", lambda v: numerical_gradient(_mlp, _X, eps=v), (1e-2, 1e-1)),
    Hyper("urv_gradient.mu", lambda v: urv_gradient(_KEY, _scalar, _X[0], num_samples=8, mu=v),
          (1e-2, 1e-1)),
    Hyper("urv_gradient.step",
          lambda v: urv_gradient(_KEY, _scalar, _X[0], num_samples=8, step=v), (1.0, 4.0)),
    Hyper("lime.kernel_width",
          lambda v: lime(_KEY, _mlp, _X, num_samples=16, target=1, kernel_width=v), (0.5, 2.0)),
    Hyper("lime.alpha", lambda v: lime(_KEY, _mlp, _X, num_samples=16, target=1, alpha=v), (0.1, 3.0)),
    Hyper("lime.scale", lambda v: lime(_KEY, _mlp, _X, num_samples=16, target=1, scale=v), (0.5, 2.0)),
    Hyper("lime.baseline",
          lambda v: lime(_KEY, _mlp, _X, num_samples=16, target=1, perturbation="bernoulli", baseline=v),
          (0.0, 1.5)),
    Hyper("smoothgrad.stdev", lambda v: smoothgrad(_KEY, _ig, _X, num_samples=4, stdev=v),
          (0.1, 0.5)),
    Hyper("expected_gradients.stdev",
          lambda v: expected_gradients(_KEY, _mlp, _X, _Z, target=1, num_samples=4, stdev=v), (0.0, 0.5)),
    Hyper("gradient_shap.stdevs",
          lambda v: gradient_shap(_KEY, _mlp, _X, _Z, target=1, n_samples=4, stdevs=v), (0.0, 0.5)),
    *[
        Hyper(f"cem_loss.{h}", lambda v, h=h: _cem(**{h: v}), (0.01, 5.0))
        for h in ("c", "gamma", "kappa")
    ],
    *[
        Hyper(f"aoexpgrad.{h}", lambda v, h=h: _descend(aoexpgrad(**{h: v})), (0.3, 0.9))
        for h in ("l1", "l2", "eta")
    ],
    *[
        Hyper(f"elastic_net_fista.{h}", lambda v, h=h: _descend(elastic_net_fista(**{h: v})),
              (0.01, 0.05))
        for h in ("learning_rate", "beta")
    ],
    Hyper("contrastive_explanation.optimizer(learning_rate)",
          lambda v: contrastive_explanation(
              _KEY, _loss, _X[0], optimizer=optax.sgd(v), num_iter=6, save_freq=3).explanation,
          (0.05, 0.2)),
    Hyper("contrastive_explanation.gradient_kwargs(mu)",
          lambda v: contrastive_explanation(
              _KEY, _loss, _X[0], optimizer=_SGD, gradient="urv", num_iter=6,
              save_freq=3, gradient_kwargs=dict(num_samples=4, mu=v)).explanation,
          (1e-2, 1e-1)),
]  # fmt: skip


def _relu(x):  # a ReLU MLP for the propagation methods
    return jax.nn.relu(x @ _W) @ _W.T


HYPERS += [
    Hyper("deeplift.eps", lambda v: xai_jax.deeplift(_mlp, _X, 0.1, target=1, eps=v), (1e-10, 0.5)),
    Hyper("lrp.epsilon", lambda v: xai_jax.lrp(_relu, _X, target=1, epsilon=v), (1e-9, 0.5)),
    Hyper("lrp.gamma", lambda v: xai_jax.lrp(_relu, _X, target=1, rule="gamma", gamma=v), (0.1, 1.0)),
]  # fmt: skip


def _numbers(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("hyper", HYPERS, ids=str)
def test_two_values_share_one_program_under_jit(hyper):
    traces = []

    def counted(value):
        traces.append(1)
        return hyper.call(value)

    fn = jax.jit(counted)
    outs = [_numbers(fn(jnp.float32(v))) for v in hyper.values]
    assert len(traces) == 1
    assert fn._cache_size() == 1
    for v, out in zip(hyper.values, outs, strict=True):  # the traced value is the one used
        for got, want in zip(out, _numbers(hyper.call(v)), strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(*outs, strict=True))


_COMPILE_EVENTS = (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT)
_events: list[str] | None = None  # collecting while a list


def _on_event(event: str, duration: float, **kwargs) -> None:
    if _events is not None and event in _COMPILE_EVENTS:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


# The optimizers are optax transformations whose hyper-parameters are closed over by the
# user's update step: an eager loop of `update` calls runs op by op, so these cases are only
# meaningful under `jit` (above). CEM's eager entry point compiles its loop per optimizer
# object: another learning rate is another optimizer.
_EAGER = [
    h for h in HYPERS
    if not h.name.startswith(("aoexpgrad", "elastic_net_fista", "contrastive_explanation.opt"))
]  # fmt: skip


@pytest.mark.parametrize("hyper", _EAGER, ids=str)
def test_another_value_compiles_nothing_eagerly(hyper):
    global _events
    jax.block_until_ready(hyper.call(hyper.values[0]))
    _events = []
    try:
        jax.block_until_ready(hyper.call(hyper.values[1]))
        events = _events
    finally:
        _events = None
    assert events == []

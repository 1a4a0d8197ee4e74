"""The framework-free layer split: a plain-JAX interception, no model library, gives the pair
`head_fn(layer_fn(x)) == model(x)`, the record of the input structure and the liveness check."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import layer_integrated_gradients
from xai_jax._layer_split import split_at

_rng = np.random.default_rng(0)
W0 = jnp.asarray(_rng.standard_normal((4, 6)), jnp.float32)
W1 = jnp.asarray(_rng.standard_normal((6, 3)), jnp.float32)
X = jnp.asarray(_rng.standard_normal((5, 4)), jnp.float32)

# A model as named layers run in order: all a front end has to know to intercept one of them.
LAYERS = (
    ("dense_0", lambda h: h @ W0),
    ("tanh", jnp.tanh),
    ("dense_1", lambda h: h @ W1),
)


def _model(x, *, skip=False, scale=None):
    h = x
    for _, layer in LAYERS:
        h = layer(h)
    if skip:  # a residual past every layer: the output depends on x directly
        h = h + jnp.sum(x, axis=1, keepdims=True)
    return h if scale is None else h * scale


def sequential_intercept(name, *, skip=False, log=None):
    """The interception contract of `xai_jax._layer_split`, for the model above."""

    def intercept(x, kwargs, on_layer):
        if log is not None:
            log.append(1)
        h, called = x, []
        for layer_name, layer in LAYERS:
            first = layer_name == name and name not in called
            called.append(layer_name)
            h = on_layer(layer, (h,), {}) if first else layer(h)
        if name not in called:
            raise ValueError(f"layer {name!r} was not called; layers called: {tuple(called)}")
        if skip:
            h = h + jnp.sum(x, axis=1, keepdims=True)
        scale = kwargs.get("scale")
        return h if scale is None else h * scale

    return intercept


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize("name", ["dense_0", "tanh", "dense_1"])
def test_head_of_layer_is_the_model(name, inputs):
    layer_fn, head_fn = split_at(sequential_intercept(name), name, attribute_to_inputs=inputs)

    @jax.jit
    def run(v):
        h = layer_fn(v)
        return h, head_fn(h), head_fn(jnp.concatenate([h, h]))

    h, out, out2 = run(X)
    _close(out, _model(X))
    _close(out2, jnp.concatenate([_model(X), _model(X)]))
    index = [n for n, _ in LAYERS].index(name)
    want = X
    for _, layer in LAYERS[: index + (0 if inputs else 1)]:
        want = layer(want)
    _close(h, want)


def test_keyword_arguments_reach_the_model_and_layer_attributions_run():
    layer_fn, head_fn = split_at(sequential_intercept("tanh"), "tanh")
    scale = jnp.linspace(0.5, 2.0, 5, dtype=jnp.float32)[:, None]
    _close(head_fn(layer_fn(X, scale=scale), scale=scale), _model(X, scale=scale))
    attributions = layer_integrated_gradients(layer_fn, head_fn, X, target=0, n_steps=8)
    assert attributions.shape == (5, 6)


def test_input_structure_is_recorded_for_head_fn():
    def intercept(x, kwargs, on_layer):  # a pytree input
        h = on_layer(lambda v: v @ W0, (x["a"] * x["b"][:, :1],), {})
        return jnp.tanh(h) @ W1

    layer_fn, head_fn = split_at(intercept, "dense_0")
    with pytest.raises(ValueError, match=r"call \(or trace\) layer_fn on an input before head_fn"):
        head_fn(jnp.zeros((2, 6)))
    x = {"a": X, "b": jnp.ones((5, 2), jnp.float32)}
    h = jax.eval_shape(layer_fn, x)  # records the structure, runs nothing
    assert h.shape == (5, 6)
    got = jax.jit(head_fn)(jnp.ones((3, 6)))  # another batch size: zeros of x's structure
    _close(got, jnp.tanh(jnp.ones((3, 6))) @ W1)
    with pytest.raises(ValueError, match="leading batch axis"):
        layer_fn({"a": jnp.float32(1.0), "b": X})
    with pytest.raises(ValueError, match="h must match the module's output"):
        head_fn(jnp.ones((3, 7)))


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
def test_liveness_check_rejects_a_skip_connection(inputs):
    intercept = sequential_intercept("tanh", skip=True)
    layer_fn, head_fn = split_at(intercept, "tanh", attribute_to_inputs=inputs)
    h = layer_fn(X)
    with pytest.raises(
        ValueError, match="other than through module 'tanh': the module is bypassed"
    ):
        head_fn(h)
    with pytest.raises(ValueError, match="bypassed"):
        jax.jit(head_fn)(h)
    # the same layer in the model without the skip is accepted
    layer_fn, head_fn = split_at(sequential_intercept("tanh"), "tanh", attribute_to_inputs=inputs)
    _close(head_fn(layer_fn(X)), _model(X))


def test_liveness_check_runs_once_per_structure():
    log = []
    layer_fn, head_fn = split_at(sequential_intercept("tanh", log=log), "tanh")
    h = layer_fn(X)
    assert len(log) == 1
    head_fn(h)
    assert len(log) == 3  # the check's trace, then the run
    head_fn(h)
    assert len(log) == 4  # same structure: not checked again
    head_fn(jnp.concatenate([h, h]))
    assert len(log) == 5  # another batch size: the check's key ignores it


def test_layer_with_two_positional_inputs():
    def intercept(x, kwargs, on_layer):
        gate = lambda a, b: a * jnp.tanh(b)
        return on_layer(gate, (x @ W0, jnp.sin(x) @ W0), {}) @ W1

    layer_fn, head_fn = split_at(intercept, "gate", attribute_to_inputs=True)
    a, b = layer_fn(X)
    _close(head_fn((a, b)), (X @ W0 * jnp.tanh(jnp.sin(X) @ W0)) @ W1)
    with pytest.raises(ValueError, match="tuple of the module's 2 positional inputs"):
        head_fn(a)


def test_errors_of_the_interception_and_of_the_core():
    layer_fn, _ = split_at(sequential_intercept("dense_9"), "dense_9")
    with pytest.raises(ValueError, match=r"layer 'dense_9' was not called; layers called"):
        layer_fn(X)  # the front end names the layers
    silent = lambda x, kwargs, on_layer: x  # breaks the contract: never calls on_layer
    layer_fn, _ = split_at(silent, "missing")
    with pytest.raises(ValueError, match="the layer 'missing' was not called"):
        layer_fn(X)
    with pytest.raises(TypeError, match="attribute_to_inputs must be a bool"):
        split_at(silent, "missing", attribute_to_inputs=1)


def test_grad_with_respect_to_closed_over_parameters():
    def loss(w0):
        def intercept(x, kwargs, on_layer):
            return jnp.tanh(on_layer(lambda v: v @ w0, (x,), {})) @ W1

        layer_fn, head_fn = split_at(intercept, "dense_0")
        return jnp.sum(jnp.sin(head_fn(layer_fn(X))))

    want = jax.grad(lambda w0: jnp.sum(jnp.sin(jnp.tanh(X @ w0) @ W1)))(W0)
    _close(jax.jit(jax.grad(loss))(W0), want, atol=1e-4)


def test_the_core_does_not_import_a_model_library():
    code = (
        "import sys, jax.numpy as jnp\n"
        "from xai_jax._layer_split import split_at\n"
        "def intercept(x, kwargs, on_layer):\n"
        "    return on_layer(jnp.tanh, (2.0 * x,), {}).sum(axis=1, keepdims=True)\n"
        "layer_fn, head_fn = split_at(intercept, 'tanh')\n"
        "print(head_fn(layer_fn(jnp.ones((2, 3)))).shape)\n"
        "print([m for m in ('haiku', 'flax', 'equinox') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["(2, 1)", "[]"]

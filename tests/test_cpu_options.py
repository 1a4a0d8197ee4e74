"""XLA:CPU compiler options per program (`_cpu_options`): YNNPACK only for programs with large
convolutions, kept only where its first result agrees with the default compile's; and the
eager plans that use it (`_eager`), at top level only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    _chunks,
    _cpu_options,
    _eager,
    deeplift_shap,
    feature_ablation,
    feature_permutation,
    infidelity,
    integrated_gradients,
    propagation,
    saliency,
)

RNG = np.random.default_rng(0)
K1 = jnp.asarray(RNG.normal(size=(3, 3, 2, 4)).astype(np.float32))  # HWIO
K2 = jnp.asarray(RNG.normal(size=(4, 1, 3, 3)).astype(np.float32))  # OIHW, 4 groups of 1
DENSE = jnp.asarray(RNG.normal(size=(4 * 4 * 4, 3)).astype(np.float32))

needs_options = pytest.mark.skipif(
    not _cpu_options._available(), reason="this XLA does not take the YNN option"
)


@pytest.fixture(autouse=True)
def _no_remembered_choices(monkeypatch):
    monkeypatch.setattr(_cpu_options, "_CHOSEN", {})


def _cnn(z):  # [batch, 8, 8, 2] -> [batch, 3]: a conv, a grouped conv, a dense head
    h = jax.lax.conv_general_dilated(
        z, K1, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = jax.lax.conv_general_dilated(
        jnp.tanh(h), K2, (1, 1), "VALID", dimension_numbers=("NHWC", "OIHW", "NHWC"),
        feature_group_count=4,
    )  # fmt: skip
    return jnp.tanh(h).reshape(len(z), -1) @ DENSE


def _x(n=5):
    return RNG.normal(size=(n, 8, 8, 2)).astype(np.float32)


def test_conv_flops_counts_every_convolution_nested_ones_and_scan_bodies():
    x = _x()
    per_example = 2 * (6 * 6 * 4) * (3 * 3 * 2) + 2 * (4 * 4 * 4) * (3 * 3 * 1)
    assert _cpu_options.conv_flops(jax.make_jaxpr(_cnn)(x)) == len(x) * per_example
    nested = jax.make_jaxpr(lambda z: jax.jit(_cnn)(z) + jax.jit(_cnn)(2 * z))(x)
    assert _cpu_options.conv_flops(nested) == 2 * len(x) * per_example

    def scanned(z):
        return jax.lax.scan(lambda c, _: (c, _cnn(z)), 0.0, None, length=3)[1]

    assert _cpu_options.conv_flops(jax.make_jaxpr(scanned)(x)) == 3 * len(x) * per_example
    # the gradient's convolutions count too (the input gradient transposes both layers)
    grad = jax.make_jaxpr(jax.grad(lambda z: _cnn(z).sum()))(x)
    assert _cpu_options.conv_flops(grad) > 1.9 * len(x) * per_example
    assert _cpu_options.conv_flops(jax.make_jaxpr(lambda z: z @ z.T)(x[:, 0, 0])) == 0


def test_dot_flops_counts_every_matrix_product_nested_ones_and_scan_bodies():
    x = _x()
    head = 2 * 3 * (4 * 4 * 4)  # the dense head: 64 -> 3 per example
    assert _cpu_options.dot_flops(jax.make_jaxpr(_cnn)(x)) == len(x) * head
    z = x[:, 0, 0]  # [5, 2]
    batched = jax.make_jaxpr(lambda a: jnp.einsum("bi,bj->bij", a, a) @ jnp.ones((2, 7)))(z)
    assert _cpu_options.dot_flops(batched) == 2 * 5 * 2 * 2 + 2 * (5 * 2 * 7) * 2  # outer: no sum
    nested = jax.make_jaxpr(lambda a: jax.jit(lambda c: c @ c.T)(a))(z)
    assert _cpu_options.dot_flops(nested) == 2 * 5 * 5 * 2

    def scanned(a):
        return jax.lax.scan(lambda c, _: (c @ jnp.eye(2), None), a, None, length=4)[0]

    assert _cpu_options.dot_flops(jax.make_jaxpr(scanned)(z)) == 4 * 2 * 5 * 2 * 2


def _mlp(z):  # [rows, 8] -> [rows, 3], dense only
    return jnp.tanh(jnp.tanh(z @ DENSE[:8, :]) @ DENSE[:3, :]) @ DENSE[3:6, :].T


def test_dense_programs_are_tried_only_when_forward_only_and_without_convolutions(monkeypatch):
    monkeypatch.setattr(_cpu_options, "MIN_DOT_FLOPS", 0.0)
    monkeypatch.setattr(_cpu_options, "_available", lambda: True)
    z = RNG.normal(size=(6, 8)).astype(np.float32)
    plain = jax.jit(_mlp)
    other = jax.jit(lambda a: _mlp(a) + 0.0)
    made = []
    same = jax.jit(lambda a: made.append(1) or _mlp(a))
    assert _cpu_options.choose(plain, lambda: same, z)[0] is plain and not made
    program, out = _cpu_options.choose(other, lambda: same, z, forward_only=True)
    assert program is same and made
    np.testing.assert_allclose(np.asarray(out), np.asarray(plain(z)), rtol=1e-6)
    monkeypatch.setattr(_cpu_options, "MIN_DOT_FLOPS", 1e9)  # below the threshold: not tried
    third = jax.jit(lambda a: _mlp(a) + 1.0)
    made.clear()
    assert _cpu_options.choose(third, lambda: same, z, forward_only=True)[0] is third
    assert not made
    # small convolutions with the dense head (occlusion's incremental rows): not tried either
    x = _x()
    cnn = jax.jit(_cnn)
    assert _cpu_options.choose(cnn, lambda: made.append(1), x, forward_only=True)[0] is cnn
    assert not made


@needs_options
def test_forward_only_eager_methods_take_the_options_for_dense_models(monkeypatch):
    # the perturbation methods run the model forward only: their dense programs are compiled
    # the second way (and keep the numbers); a gradient method's are not.
    monkeypatch.setattr(_cpu_options, "MIN_DOT_FLOPS", 0.0)
    monkeypatch.setattr(_eager, "_PLANS", {})
    z, t = RNG.normal(size=(6, 8)).astype(np.float32), np.arange(6) % 3
    expected = jax.jit(lambda a: feature_ablation(_mlp, a, target=t))(z)
    np.testing.assert_allclose(
        np.asarray(feature_ablation(_mlp, z, target=t)), np.asarray(expected), rtol=1e-5, atol=1e-6
    )
    attr = saliency(_mlp, z, target=t)
    key = jax.random.key(0)
    score = infidelity(key, _mlp, z, attr, target=t)
    traced = jax.jit(lambda a: infidelity(key, _mlp, a, attr, target=t))(z)
    np.testing.assert_allclose(np.asarray(score), np.asarray(traced), rtol=1e-4, atol=1e-6)
    # feature ablation took the options; the gradient, infidelity (slower that way, with its
    # noise draw) and the permutation's rows did not ask for them
    feature_permutation(key, _mlp, z, target=t)
    plans = list(_eager._PLANS.values())
    assert [plan.forward_only for plan, _, _ in plans] == [True, False, False, False]
    assert [options for _, _, options in plans] == [True, False, False, False]


@needs_options
def test_choose_keeps_the_optioned_program_where_it_agrees(monkeypatch):
    monkeypatch.setattr(_cpu_options, "MIN_CONV_FLOPS", 0.0)
    plain = jax.jit(_cnn)
    optioned = jax.jit(_cnn, compiler_options=_cpu_options.OPTIONS)
    x = _x()
    program, out = _cpu_options.choose(plain, lambda: optioned, x)
    assert program is optioned
    np.testing.assert_allclose(np.asarray(out), np.asarray(plain(x)), rtol=1e-5, atol=1e-6)
    made = []  # the choice is remembered: no second compile, no second comparison
    again, out2 = _cpu_options.choose(plain, lambda: made.append(1) or optioned, x)
    assert again is optioned and not made
    np.testing.assert_array_equal(np.asarray(out2), np.asarray(out))


def test_choose_keeps_the_default_program_on_a_disagreement_or_below_the_threshold(monkeypatch):
    x = _x()
    plain = jax.jit(_cnn)
    wrong = jax.jit(lambda z: _cnn(z) * (1 + 2e-3))  # off by more than AGREEMENT
    made = []
    small, out = _cpu_options.choose(plain, lambda: made.append(1) or wrong, x)  # ~30 kFLOP
    assert small is plain and not made
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain(x)))
    monkeypatch.setattr(_cpu_options, "MIN_CONV_FLOPS", 0.0)
    monkeypatch.setattr(_cpu_options, "_available", lambda: True)
    program, out = _cpu_options.choose(plain, lambda: wrong, x)
    assert program is plain
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain(x)))

    def failing():  # an XLA that fails on the optioned program: the default one is kept
        raise RuntimeError("INTERNAL: a YNN fusion the backend cannot emit")

    other = jax.jit(lambda z: _cnn(z) + 0.0)  # a plain program not chosen for yet
    program, out = _cpu_options.choose(other, failing, x)
    assert program is other
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain(x)))
    monkeypatch.setattr(_cpu_options, "_available", lambda: False)  # an XLA without the option
    assert _cpu_options.choose(plain, lambda: made.append(1) or wrong, x)[0] is plain
    assert not made


@needs_options
def test_a_known_ynn_miscompile_falls_back_to_the_default_program(monkeypatch):
    # jaxlib 0.10.2's YNN fusion computes a dot with a broadcast constant (`jnp.ones`) as
    # garbage; whether or not a later XLA fixes it, the kept program's numbers are right.
    monkeypatch.setattr(_cpu_options, "MIN_CONV_FLOPS", 0.0)

    def model(z):
        return _cnn(z) @ jnp.ones((3, 2), z.dtype)

    x = _x()
    plain = jax.jit(model)
    optioned = jax.jit(model, compiler_options=_cpu_options.OPTIONS)
    program, out = _cpu_options.choose(plain, lambda: optioned, x)
    expected = np.asarray(jax.jit(_cnn)(x)).sum(1, keepdims=True).repeat(2, 1)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(program(x)), expected, rtol=1e-5, atol=1e-5)


def test_agreement_is_measured_on_the_whole_results_scale():
    agree = _cpu_options._agree
    attr = np.array([[1.0, -2.0], [0.5, np.nan]], np.float32)
    delta = np.array([1e-7, -3e-7], np.float32)
    assert agree((attr, delta), (attr + 1e-4, delta * 10))  # the delta against the attributions
    assert not agree((attr, delta), (attr + 3e-3, delta))
    assert not agree(attr, np.where(np.isnan(attr), 0.0, attr))  # NaN where the reference has NaN
    assert not agree((attr, delta), (attr,))  # structure
    assert not agree(attr, attr.astype(np.float64))  # dtype
    assert not agree(np.arange(3), np.arange(3) + 1)  # integers: equal
    assert agree({"i": np.arange(3), "f": attr}, {"i": np.arange(3), "f": attr})
    keys = jax.random.split(jax.random.key(0), 2)
    assert agree((keys, attr), (keys, attr)) and not agree(keys, keys[::-1])  # by key data


@needs_options
def test_eager_plans_use_the_options_at_top_level_only(monkeypatch):
    monkeypatch.setattr(_cpu_options, "MIN_CONV_FLOPS", 0.0)
    monkeypatch.setattr(_eager, "_PLANS", {})
    x, t = _x(n=6), np.arange(6) % 3
    traces = []

    def model(z):
        traces.append(1)
        return _cnn(z)

    first = saliency(model, x, target=t)
    ((_plan, compiled, options),) = _eager._PLANS.values()
    assert options and compiled is not _eager._compiled(*next(iter(_eager._PLANS))[:3], False)
    count = len(traces)
    second = saliency(model, x, target=t)
    assert len(traces) == count  # nothing traced again
    np.testing.assert_array_equal(np.asarray(second), np.asarray(first))
    expected = jax.jit(lambda z: saliency(model, z, target=t))(x)
    np.testing.assert_allclose(np.asarray(first), np.asarray(expected), rtol=1e-4, atol=1e-5)
    # the same signature met inside a trace (a concrete x closed over): the plain program
    inside = jax.jit(lambda s: s * saliency(model, x, target=t))(2.0)
    np.testing.assert_allclose(np.asarray(inside), 2 * np.asarray(first), rtol=1e-4, atol=1e-5)
    # a first call inside a trace plans the plain program
    y = _x(n=7)
    jax.jit(lambda s: s * saliency(model, y, target=np.arange(7) % 3))(1.0)
    assert [entry[2] for entry in _eager._PLANS.values()] == [True, False]


@needs_options
def test_eager_chunk_loops_use_the_options_and_keep_the_numbers(monkeypatch):
    monkeypatch.setattr(_cpu_options, "MIN_CONV_FLOPS", 0.0)
    x, t = _x(n=4), np.arange(4) % 3
    ig = lambda z: integrated_gradients(_cnn, z, target=t, n_steps=8, internal_batch_size=8)
    eager = ig(x)  # 4 chunks of 8 path points: a host loop at top level
    chosen = [entry[2] for entry in _cpu_options._CHOSEN.values()]
    assert _chunks._with_options(_chunks._step) in chosen
    traced = jax.jit(ig)(x)  # a scan inside the caller's trace, without options
    np.testing.assert_allclose(np.asarray(eager), np.asarray(traced), rtol=1e-4, atol=1e-5)
    # one chunk at top level (integrated gradients unchunked): the second program too
    whole = integrated_gradients(_cnn, x, target=t, n_steps=8)
    assert _chunks._with_options(_chunks._whole) in [e[2] for e in _cpu_options._CHOSEN.values()]
    np.testing.assert_allclose(np.asarray(whole), np.asarray(traced), rtol=1e-4, atol=1e-5)
    # DeepLiftShap's baseline chunks run their one compiled step through `call_step`
    bg = _x(n=3)
    chunked = deeplift_shap(_cnn, x, bg, target=t, internal_batch_size=4)
    assert _chunks._with_options(propagation._kernel) in [
        e[2] for e in _cpu_options._CHOSEN.values()
    ]
    whole = deeplift_shap(_cnn, x, bg, target=t)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-4, atol=1e-5)


def _conv(dims, strides=None, padding="VALID", lhs_dilation=None, rhs_dilation=None):
    return lambda z, k: jax.lax.conv_general_dilated(
        z, k, strides or (1,) * (z.ndim - 2), padding, lhs_dilation, rhs_dilation,
        dimension_numbers=dims,
    )  # fmt: skip


THIN = [  # (input shape, kernel shape, the convolution): one input or one output channel
    ((3, 9, 9, 1), (3, 3, 1, 16), _conv(("NHWC", "HWIO", "NHWC"))),
    ((3, 1, 9, 9), (16, 1, 3, 3), _conv(("NCHW", "OIHW", "NCHW"))),  # Captum's layout
    ((3, 9, 9, 7), (3, 3, 7, 1), _conv(("NHWC", "HWIO", "NHWC"), padding=((2, 2), (2, 2)))),
    ((3, 9, 9, 1), (3, 3, 1, 5), _conv(("NHWC", "HWIO", "NHWC"), (2, 2), "SAME")),
    ((3, 9, 9, 1), (3, 2, 1, 5), _conv(("NHWC", "HWIO", "NHWC"), (2, 1), ((1, -1), (0, 2)))),
    ((3, 5, 5, 6), (3, 3, 6, 1), _conv(("NHWC", "HWIO", "NHWC"), None, ((2, 2), (2, 2)), (2, 2))),
    ((3, 9, 9, 1), (3, 3, 1, 4), _conv(("NHWC", "HWIO", "NHWC"), rhs_dilation=(2, 3))),
    ((2, 4, 11), (1, 4, 3), _conv(("NCH", "OIH", "NCH"), padding="SAME")),  # 1-D, one output
    ((2, 5, 5, 5, 1), (2, 2, 2, 1, 3), _conv(("NDHWC", "DHWIO", "NDHWC"))),  # 3-D
    ((1, 9, 9, 1), (3, 3, 1, 1), _conv(("NHWC", "HWIO", "NHWC"))),  # one in, one out
]


@needs_options
@pytest.mark.parametrize("case", range(len(THIN)))
def test_thin_convolutions_are_shifted_multiply_adds_with_the_same_numbers(case):
    shape, kernel_shape, conv = THIN[case]
    z = jnp.asarray(RNG.normal(size=shape).astype(np.float32))
    k = jnp.asarray(RNG.normal(size=kernel_shape).astype(np.float32))
    rewritten = _cpu_options.jit(conv)
    assert _cpu_options.conv_flops(rewritten.trace(z, k).jaxpr) == 0  # no convolution left
    expected = np.asarray(jax.jit(conv)(z, k))
    np.testing.assert_allclose(np.asarray(rewritten(z, k)), expected, rtol=1e-5, atol=1e-5)


@needs_options
def test_the_rewrite_keeps_wide_grouped_and_looped_convolutions_and_reaches_into_calls():
    x = jnp.asarray(_x())
    # `_cnn`'s layers: 2 -> 4 channels, and 4 groups of 1 -> 1: neither is thin
    kept = _cpu_options.jit(_cnn).trace(x).jaxpr
    assert _cpu_options.conv_flops(kept) == _cpu_options.conv_flops(jax.make_jaxpr(_cnn)(x))
    np.testing.assert_allclose(
        np.asarray(_cpu_options.jit(_cnn)(x)), np.asarray(_cnn(x)), rtol=1e-5, atol=1e-5
    )
    many = jnp.asarray(RNG.normal(size=(3, 3, 1, _cpu_options.THIN_MAX_OUTPUTS)), jnp.float32)
    wide = _conv(("NHWC", "HWIO", "NHWC"))
    assert _cpu_options.conv_flops(_cpu_options.jit(wide).trace(x[..., :1], many).jaxpr) > 0
    # one input channel inside a nested jit and relu's custom_jvp: rewritten; in a scan: kept
    k = jnp.asarray(RNG.normal(size=(3, 3, 1, 4)).astype(np.float32))

    def model(z):
        return jax.nn.relu(jax.jit(wide)(z, k)).sum((1, 2, 3))

    def looped(z):
        return jax.lax.scan(lambda c, _: (c, model(z)), 0.0, None, length=2)[1]

    z = x[..., :1]
    assert _cpu_options.conv_flops(_cpu_options.jit(model).trace(z).jaxpr) == 0
    assert _cpu_options.conv_flops(_cpu_options.jit(looped).trace(z).jaxpr) > 0
    for f in (model, looped):
        np.testing.assert_allclose(
            np.asarray(_cpu_options.jit(f)(z)), np.asarray(f(z)), rtol=1e-5, atol=1e-4
        )


@needs_options
def test_the_rewrite_takes_gradients_static_arguments_and_pytree_results():
    k = jnp.asarray(RNG.normal(size=(3, 3, 1, 8)).astype(np.float32))
    conv = _conv(("NHWC", "HWIO", "NHWC"))

    def f(z, mode):  # the input gradient's transposed convolution has one output channel
        g = jax.grad(lambda v: jnp.tanh(conv(v, k)).sum())(z)
        return {"grad": g, "mode": jnp.asarray(len(mode)), "none": None}

    z = jnp.asarray(_x()[..., :1])
    rewritten = _cpu_options.jit(f, (1,))
    assert _cpu_options.conv_flops(rewritten.trace(z, "ab").jaxpr) == 0
    out, expected = rewritten(z, "ab"), jax.jit(f, static_argnums=1)(z, "ab")
    assert out["none"] is None and int(out["mode"]) == 2
    np.testing.assert_allclose(
        np.asarray(out["grad"]), np.asarray(expected["grad"]), rtol=1e-5, atol=1e-5
    )

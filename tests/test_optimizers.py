"""aoexpgrad and elastic_net_fista against NumPy transcriptions of MAX's and alibi's steps."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import lambertw

from benchmarks._max_reference import MaxAOExpGrad
from xai_jax.optimizers import (
    AoExpGradState,
    ElasticNetFistaState,
    _lambertw_exp,
    aoexpgrad,
    elastic_net_fista,
)

# --------------------------------------------------------------------------------------------
# References.


def alibi_fista(grad, x0, lr_fn, beta, lower, upper, steps):
    """alibi CEM.attack's loop (gradient step, shrinkage, momentum), without the PP/PN projection.

    `global_step` is incremented by `apply_grads` (after the learning rate is read) and before
    `adv_updater_s` reads it for the momentum coefficient.
    """
    orig = np.array(x0, dtype=np.float64)
    adv, adv_s = orig.copy(), orig.copy()
    lo = -np.inf if lower is None else lower
    hi = np.inf if upper is None else upper
    advs, ys = [], []
    for k in range(steps):
        adv_s = adv_s - lr_fn(k) * grad(adv_s)
        global_step = k + 1.0
        diff = adv_s - orig
        cond1 = (diff > beta).astype(np.float64)
        cond2 = (np.abs(diff) <= beta).astype(np.float64)
        cond3 = (diff < -beta).astype(np.float64)
        upper_v = np.minimum(adv_s - beta, hi)
        lower_v = np.maximum(adv_s + beta, lo)
        assign_adv = cond1 * upper_v + cond2 * orig + cond3 * lower_v
        zt = global_step / (global_step + 3.0)
        adv_s = assign_adv + zt * (assign_adv - adv)
        adv = assign_adv
        advs.append(adv.copy())
        ys.append(adv_s.copy())
    return advs, ys


def quadratic(rng, d, n=12):
    """0.5 ||A y - b||^2 as (jax loss, numpy gradient)."""
    a = rng.normal(size=(n, d))
    b = rng.normal(size=n)
    loss = lambda y: 0.5 * jnp.sum((jnp.asarray(a) @ y - jnp.asarray(b)) ** 2)
    return loss, lambda y: a.T @ (a @ y - b)


def logistic(rng, d, n=12):
    """Mean logistic loss of labels in {-1, 1}, as (jax loss, numpy gradient)."""
    a = rng.normal(size=(n, d))
    s = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    loss = lambda y: jnp.mean(jnp.logaddexp(0.0, -jnp.asarray(s) * (jnp.asarray(a) @ y)))
    return loss, lambda y: a.T @ (-s / (1.0 + np.exp(s * (a @ y)))) / n


def run(opt, loss, x0, steps):
    """Eager optax loop; the params after each step and the final state."""
    params = jnp.asarray(x0)
    state = opt.init(params)
    out = []
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append(np.asarray(params))
    return out, state


# --------------------------------------------------------------------------------------------
# _lambertw_exp.


def test_lambertw_exp_matches_scipy(x64):
    a = np.concatenate([np.linspace(-30.0, 60.0, 3001), 15.0 + np.array([-1e-9, 0.0, 1e-9])])
    a = np.concatenate([a, [-2.0, 1.0, -40.0, -36.0, 14.0, 16.0]])
    w = _lambertw_exp(jnp.asarray(a))
    assert w.dtype == jnp.float64
    ref = lambertw(np.exp(a)).real
    np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-13)
    # MAX's value at 15 is the asymptote of W(15), 2.08; the true W(e^15) is 12.476
    assert float(_lambertw_exp(jnp.asarray(15.0))) == pytest.approx(12.4761791, abs=1e-6)


def test_lambertw_exp_where_exp_overflows(x64):
    a = np.array([700.0, 800.0, 1e4, 1e10, 1e300])
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.float64(800.0)))
    w = np.asarray(_lambertw_exp(jnp.asarray(a)))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w + np.log(w), a, rtol=1e-15)
    assert w[1] == pytest.approx(793.3237685784, rel=1e-12)


def test_lambertw_exp_float32():
    a = np.linspace(-30.0, 60.0, 301).astype(np.float32)
    w = _lambertw_exp(jnp.asarray(a))
    assert w.dtype == jnp.float32
    ref = lambertw(np.exp(a.astype(np.float64))).real
    # float32 input rounding is amplified by the condition number |a| / (1 + w)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=5e-6)
    big = np.asarray(_lambertw_exp(jnp.asarray([100.0, 1e30], dtype=jnp.float32)))
    assert np.all(np.isfinite(big))


# --------------------------------------------------------------------------------------------
# aoexpgrad against MAX.


CASES = [
    # loss, l1, l2, eta, bounds: each case thresholds some entries to 0 on the way
    ("quadratic", 2.0, 0.0, 1.0, None),
    ("quadratic", 2.0, 0.5, 1.0, None),
    ("quadratic", 1.0, 0.0, 1.0, (-0.3, 0.4)),
    ("quadratic", 1.0, 0.5, 1.0, (-0.3, 0.4)),
    ("logistic", 0.05, 0.0, 1.0, None),
    ("logistic", 0.03, 0.1, 2.0, (-0.3, 0.3)),
]


@pytest.mark.parametrize(("kind", "l1", "l2", "eta", "bounds"), CASES)
def test_aoexpgrad_matches_max(x64, rng, kind, l1, l2, eta, bounds):
    d, steps = 6, 12
    loss, grad = (quadratic if kind == "quadratic" else logistic)(rng, d)
    x0 = rng.normal(size=d) * 0.2
    lower, upper = bounds if bounds else (None, None)
    ref = MaxAOExpGrad(grad, x0, lower, upper, l1, l2, eta, buggy=True)
    opt = aoexpgrad(l1, l2, eta, lower=lower, upper=upper)
    params = jnp.asarray(x0)
    state = opt.init(params)
    xs = []
    for _ in range(steps):
        want_y = ref.update()
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, want_y, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(state.x, ref.x, rtol=1e-9, atol=1e-12)
        xs.append(np.asarray(state.x))
    # the asymptote branch is never taken here, so MAX itself is exact and must agree with us
    assert ref.max_abc < 15.0
    np.testing.assert_allclose(state.h, ref.h, rtol=1e-12)
    assert float(state.lam) == pytest.approx(ref.lam, rel=1e-12)
    assert int(state.count) == steps
    xs = np.asarray(xs)
    assert np.any(xs == 0.0)
    if bounds:
        assert np.all((xs >= lower) & (xs <= upper))
        assert np.any((xs == lower) | (xs == upper))


def test_aoexpgrad_large_abc_branch_differs_from_max(x64, rng):
    # a small eta makes the steps long: |z| and so abc pass 15 at the first step
    d, steps, l1, l2, eta = 6, 6, 0.01, 1.0, 0.05
    loss, grad = quadratic(rng, d)
    x0 = rng.normal(size=d) * 0.2
    buggy = MaxAOExpGrad(grad, x0, None, None, l1, l2, eta, buggy=True)
    exact = MaxAOExpGrad(grad, x0, None, None, l1, l2, eta, buggy=False)
    buggy_ys = [buggy.update().copy() for _ in range(steps)]
    exact_ys = [exact.update().copy() for _ in range(steps)]
    assert exact.max_abc >= 15.0
    ys, _ = run(aoexpgrad(l1, l2, eta), loss, x0, steps)
    np.testing.assert_allclose(ys, exact_ys, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(np.asarray(ys) - np.asarray(buggy_ys))) > 1e-2


def test_aoexpgrad_first_zero_gradient_uses_tiny_alpha(x64):
    # g = h = 0 at the first step: alpha = 0, and MAX replaces it by 1e-6
    x0 = np.array([0.5, -0.25, 0.0])
    ref = MaxAOExpGrad(lambda y: np.zeros_like(y), x0, None, None, 0.1, 0.0, 1.0)
    opt = aoexpgrad(0.1, 0.0, 1.0)
    state = opt.init(jnp.asarray(x0))
    updates, state = opt.update(jnp.zeros(3), state)
    ref.update()
    np.testing.assert_allclose(state.y, ref.y, atol=1e-12)
    np.testing.assert_allclose(optax.apply_updates(jnp.asarray(x0), updates), ref.y, atol=1e-12)
    assert np.all(np.asarray(state.y) == 0.0)  # the huge l1 threshold (t + 1) * l1 / 1e-6


def test_aoexpgrad_thresholded_l2_entries_are_zero_where_max_is_not(x64):
    # with l2 > 0 the same step has c = 0 everywhere, so v = W(ab e^ab) / b - a = 0 exactly; MAX
    # reaches abc = log(ab) + ab >= 15 and its asymptote gives +-0.33 instead
    x0 = np.array([0.5, -0.25, 0.0])
    ref = MaxAOExpGrad(lambda y: np.zeros_like(y), x0, None, None, 0.1, 0.5, 1.0)
    ref.update()
    assert ref.max_abc >= 15.0
    assert np.max(np.abs(ref.y)) > 0.3
    opt = aoexpgrad(0.1, 0.5, 1.0)
    _, state = opt.update(jnp.zeros(3), opt.init(jnp.asarray(x0)))
    assert np.all(np.asarray(state.y) == 0.0)


# --------------------------------------------------------------------------------------------
# aoexpgrad as an optax transformation.


def test_aoexpgrad_chain_jit_and_pytree_state(rng):
    loss, _ = quadratic(rng, 5)
    x0 = jnp.asarray(rng.normal(size=5), dtype=jnp.float32)
    opt = aoexpgrad(0.1, 0.2, lower=-1.0, upper=1.0)
    plain, state = run(opt, loss, x0, 6)
    chained, _ = run(
        optax.chain(aoexpgrad(0.1, 0.2, lower=-1.0, upper=1.0), optax.scale(1.0)), loss, x0, 6
    )
    np.testing.assert_allclose(chained, plain, rtol=1e-6, atol=1e-7)

    params, jstate = x0, opt.init(x0)
    step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p))
    for want in plain:
        updates, jstate = step(params, jstate)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, want, rtol=1e-5, atol=1e-6)
    assert params.dtype == jnp.float32

    assert isinstance(state, AoExpGradState)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == 5  # count, x, y, h, lam
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert state.count.dtype == jnp.int32
    assert all(leaf.dtype == jnp.float32 for leaf in leaves[1:])


def test_aoexpgrad_pytree_params_are_leafwise(x64, rng):
    la, _ = quadratic(rng, 3)
    lb, _ = logistic(rng, 4)
    tree = {"a": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(rng.normal(size=(2, 2)))}
    loss = lambda p: la(p["a"]) + lb(p["b"].reshape(4))
    opt = aoexpgrad(0.05, 0.1)
    params, state = tree, opt.init(tree)
    for _ in range(5):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert jax.tree.structure(state.lam) == jax.tree.structure(tree)
    # each leaf is its own problem (d = the leaf's size): the same as optimising it alone
    alone_a, _ = run(opt, la, tree["a"], 5)
    alone_b, _ = run(opt, lambda b: lb(b.reshape(4)), tree["b"], 5)
    np.testing.assert_allclose(params["a"], alone_a[-1], rtol=1e-12)
    np.testing.assert_allclose(params["b"], alone_b[-1], rtol=1e-12)


def test_aoexpgrad_params_none_uses_state_y(x64, rng):
    loss, _ = quadratic(rng, 4)
    x0 = jnp.asarray(rng.normal(size=4))
    opt = aoexpgrad(0.1, 0.0)
    s1 = s2 = opt.init(x0)
    p1 = p2 = x0
    for _ in range(3):
        u1, s1 = opt.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = opt.update(jax.grad(loss)(p2), s2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    np.testing.assert_allclose(p2, p1, rtol=1e-12)


def _minimise(opt, loss, x0, steps):
    state = opt.init(x0)

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(body, (x0, state), None, length=steps)
    return params, state


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_aoexpgrad_converges_to_sparse_minimiser(x64, l2):
    # 0.5 ||y - c||^2 + l1 ||y||_1 + l2 / 2 ||y||^2 has the minimiser soft(c, l1) / (1 + l2)
    c = jnp.asarray([1.0, -0.7, 0.05, -0.1, 0.0, 0.4])
    l1 = 0.2
    want = np.sign(c) * np.maximum(np.abs(c) - l1, 0.0) / (1.0 + l2)
    loss = lambda y: 0.5 * jnp.sum((y - c) ** 2)
    y, state = jax.jit(lambda x0: _minimise(aoexpgrad(l1, l2), loss, x0, 2000))(jnp.full(6, 0.3))
    np.testing.assert_allclose(state.x, want, atol=1e-4)
    np.testing.assert_allclose(y, want, atol=1e-3)
    zero = want == 0.0
    assert np.all(np.asarray(state.x)[zero] == 0.0)  # exact zeros, not small values
    assert np.all(np.asarray(state.x)[~zero] != 0.0)


# --------------------------------------------------------------------------------------------
# elastic_net_fista against alibi.


@pytest.mark.parametrize("bounds", [None, (-0.6, 0.8)])
@pytest.mark.parametrize("decay", [False, True])
def test_elastic_net_fista_matches_alibi(x64, rng, bounds, decay):
    d, steps, lr0, beta, max_iter = 6, 15, 0.05, 0.03, 40
    loss, grad = quadratic(rng, d)
    x0 = rng.uniform(-0.5, 0.5, size=d)
    lower, upper = bounds if bounds else (None, None)
    if decay:
        # alibi's tf.train.polynomial_decay(lr0, step, max_iter, 0, power=0.5); optax computes it
        # in float32 from the int32 count, so the reference takes the schedule's values
        lr = optax.polynomial_schedule(lr0, 0.0, power=0.5, transition_steps=max_iter)
        lr_fn = lambda k: float(lr(jnp.asarray(k, jnp.int32)))
        for k in (0, 7, 14):
            assert lr_fn(k) == pytest.approx(lr0 * (1.0 - k / max_iter) ** 0.5, rel=1e-6)
    else:
        lr, lr_fn = lr0, lambda k: lr0
    advs, ref_ys = alibi_fista(grad, x0, lr_fn, beta, lower, upper, steps)
    opt = elastic_net_fista(lr, beta, lower=lower, upper=upper)
    params, state = jnp.asarray(x0), opt.init(jnp.asarray(x0))
    for k in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, ref_ys[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.adv, advs[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(state.orig, x0)
    assert int(state.count) == steps
    # the shrinkage has pinned entries to orig exactly, and the bounds were active
    assert any(np.any(adv == x0) for adv in advs)
    if bounds:
        assert np.all((np.asarray(advs) >= lower) & (np.asarray(advs) <= upper))
        assert any(np.any((adv == lower) | (adv == upper)) for adv in advs)


def test_elastic_net_fista_sparse_minimiser_and_bounds(x64):
    # with a constant lr the fixed point minimises 0.5 ||a - c||^2 + (beta / lr) ||a - orig||_1
    c = jnp.asarray([1.0, -0.7, 0.05, -0.1, 0.0, 2.0])
    orig = jnp.asarray([0.0, 0.0, 0.0, 0.0, 0.3, 0.0])
    lr, beta, lower, upper = 0.5, 0.1, -0.5, 0.9
    loss = lambda a: 0.5 * jnp.sum((a - c) ** 2)
    diff = np.asarray(c - orig)
    want = np.clip(
        np.asarray(orig) + np.sign(diff) * np.maximum(np.abs(diff) - beta / lr, 0.0), lower, upper
    )
    _, state = jax.jit(
        lambda x0: _minimise(elastic_net_fista(lr, beta, lower=lower, upper=upper), loss, x0, 300)
    )(orig)
    np.testing.assert_allclose(state.adv, want, atol=1e-8)
    pinned = np.abs(diff) <= beta / lr
    np.testing.assert_array_equal(np.asarray(state.adv)[pinned], np.asarray(orig)[pinned])
    assert np.all((state.adv >= lower) & (state.adv <= upper))
    assert isinstance(state, ElasticNetFistaState)
    assert len(jax.tree.leaves(state)) == 3


def test_elastic_net_fista_chain_jit_pytree(rng):
    loss_a, _ = quadratic(rng, 3)
    tree = {"a": jnp.asarray(rng.normal(size=3), dtype=jnp.float32), "b": jnp.ones(2)}
    loss = lambda p: loss_a(p["a"]) + jnp.sum(p["b"] ** 2)
    sched = optax.polynomial_schedule(0.05, 0.0, power=0.5, transition_steps=20)
    plain = elastic_net_fista(sched, 0.01)
    chained = optax.chain(optax.clip(100.0), elastic_net_fista(sched, 0.01))
    step = lambda opt: jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p))
    p1, s1, p2, s2 = tree, plain.init(tree), tree, chained.init(tree)
    p3, s3 = tree, plain.init(tree)
    for _ in range(5):
        u1, s1 = plain.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = step(chained)(p2, s2)
        u3, s3 = step(plain)(p3, s3)
        p1, p2, p3 = (optax.apply_updates(p, u) for p, u in ((p1, u1), (p2, u2), (p3, u3)))
    for got in (p2, p3):
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), got, p1)
    assert p1["a"].dtype == jnp.float32


def test_elastic_net_fista_needs_params():
    opt = elastic_net_fista(0.1, 0.1)
    state = opt.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), state)


# --------------------------------------------------------------------------------------------
# Hyper-parameter checks.


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"l1": -0.1}, "l1"),
        ({"l2": -1.0}, "l2"),
        ({"eta": 0.0}, "eta"),
        ({"eta": -1.0}, "eta"),
        ({"l1": float("nan")}, "l1"),
        ({"eta": float("inf")}, "eta"),
        ({"lower": 1.0, "upper": 0.0}, "lower"),
        ({"lower": np.array([0.0, 2.0]), "upper": np.array([1.0, 1.0])}, "lower"),
        ({"lower": float("nan")}, "lower"),
    ],
)
def test_aoexpgrad_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        aoexpgrad(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1e-2}, "learning_rate"),
        ({"lower": 0.5, "upper": -0.5}, "lower"),
    ],
)
def test_elastic_net_fista_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        elastic_net_fista(**kwargs)


def test_non_real_hyperparameters_raise_type_error():
    with pytest.raises(TypeError, match="l1"):
        aoexpgrad(l1="0.5")
    with pytest.raises(TypeError, match="beta"):
        elastic_net_fista(beta=None)


def test_traced_hyperparameters_are_scalars_and_concrete_arrays_are_checked():
    # traced scalars are operands (tests/test_hyperparams_compile.py); a traced vector is refused
    with pytest.raises(TypeError, match="eta must be a real scalar"):
        jax.jit(lambda e: aoexpgrad(eta=e).init(jnp.zeros(2)))(jnp.ones(2))
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        elastic_net_fista(learning_rate=float("inf"))
    with pytest.raises(ValueError, match="eta"):  # a concrete JAX scalar is checked as a float
        aoexpgrad(eta=jnp.float32(-1.0))
    np.testing.assert_array_equal(  # a concrete JAX scalar is the same optimizer as the float
        _descend_once(aoexpgrad(l2=jnp.float32(0.0))), _descend_once(aoexpgrad(l2=0.0))
    )


def _descend_once(optimizer):
    x = jnp.array([0.3, -0.2, 0.1])
    updates, _ = optimizer.update(x - 1.0, optimizer.init(x), x)
    return np.asarray(optax.apply_updates(x, updates))


def test_a_nan_gradient_gives_nan_iterates_not_a_frozen_zero():
    opt = aoexpgrad(l1=0.1, l2=0.5)
    x = jnp.array([0.3, -0.2, 0.1])
    state = opt.init(x)
    updates, state = opt.update(jnp.array([jnp.nan, 1.0, 1.0]), state, x)
    x = optax.apply_updates(x, updates)
    updates, state = opt.update(jnp.ones(3), state, x)  # lam is NaN from now on
    assert np.isnan(np.asarray(state.x)).all()


@pytest.mark.parametrize("make", [aoexpgrad, elastic_net_fista])
def test_integer_params_are_refused(make):
    with pytest.raises(TypeError, match="needs floating params, got int32"):
        make().init(jnp.array([1, 2], jnp.int32))


# --------------------------------------------------------------------------------------------
# Shapes and trees: bounds, grads and hyper-parameters that would broadcast are refused.


@pytest.mark.parametrize("make", [aoexpgrad, elastic_net_fista])
@pytest.mark.parametrize("bound", ["lower", "upper"])
def test_bound_that_does_not_broadcast_to_the_params_raises_at_init(make, bound):
    opt = make(**{bound: np.zeros(3, np.float32) if bound == "lower" else np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=rf"{bound} of shape \(3,\) does not broadcast to the "
                                         r"params of shape \(4,\)"):  # fmt: skip
        opt.init(jnp.zeros(4))
    # a bound that broadcasts *together* with a leaf but to a larger shape is refused too
    with pytest.raises(ValueError, match=rf"{bound} of shape \(2, 4\) does not broadcast"):
        make(**{bound: np.zeros((2, 4), np.float32)}).init(jnp.zeros(4))
    # per-leaf: a pytree's leaf of another shape is named by its path
    with pytest.raises(ValueError, match=r"params\['b'\] of shape \(2,\)"):
        make(**{bound: np.zeros(3, np.float32)}).init({"a": jnp.zeros(3), "b": jnp.zeros(2)})


@pytest.mark.parametrize("make", [aoexpgrad, elastic_net_fista])
def test_grads_of_another_tree_or_shape_raise_under_jit_too(make):
    opt = make()
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"updates \(the gradient\) must have the params' tree "
                                         r"structure PyTreeDef\(\{'a': \*, 'b': \*\}\), got"):  # fmt: skip
        opt.update({"a": jnp.zeros(3)}, state, params)
    bad = {"a": jnp.zeros(1), "b": jnp.zeros(2)}  # (1,) would broadcast into the iterate
    with pytest.raises(ValueError, match=r"leaf shapes \[\(3,\), \(2,\)\], got \[\(1,\), \(2,\)\]"):
        jax.jit(opt.update)(bad, state, params)
    with pytest.raises(ValueError, match="params must have the params' leaf shapes"):
        opt.update(params, state, {"a": jnp.zeros((2, 3)), "b": jnp.zeros(2)})


@pytest.mark.parametrize(
    ("make", "name"),
    [(aoexpgrad, "l1"), (aoexpgrad, "l2"), (aoexpgrad, "eta"),
     (elastic_net_fista, "beta"), (elastic_net_fista, "learning_rate")],
)  # fmt: skip
def test_array_hyperparameters_are_refused_naming_their_shape(make, name):
    for value in (np.full(3, 0.5, np.float32), jnp.full((2, 1), 0.5)):
        with pytest.raises(
            ValueError, match=rf"{name} must be a scalar .*shape {re.escape(str(value.shape))}"
        ):
            make(**{name: value})


def test_a_schedule_returning_an_array_raises():
    opt = elastic_net_fista(lambda count: jnp.full(3, 0.1))
    state = opt.init(jnp.zeros(4))
    with pytest.raises(ValueError, match=r"schedule must return a scalar, got shape \(3,\)"):
        opt.update(jnp.ones(4), state, jnp.zeros(4))


# --------------------------------------------------------------------------------------------
# Equal arguments, equal optimizers: a caller's compiled program is reused.


def test_equal_arguments_make_equal_hashable_optimizers():
    assert aoexpgrad(0.1, 0.2, lower=0.0) == aoexpgrad(0.1, 0.2, lower=0.0)
    assert hash(aoexpgrad(0.1, 0.2, lower=0.0)) == hash(aoexpgrad(0.1, 0.2, lower=0.0))
    assert aoexpgrad(0.1) != aoexpgrad(0.2)
    assert elastic_net_fista(0.1, beta=0.2) == elastic_net_fista(0.1, beta=0.2)
    assert elastic_net_fista(0.1, beta=0.2) != elastic_net_fista(0.1, beta=0.3)
    # array bounds are pytree leaves (operands of a caller's jit), compared by identity here
    opt = aoexpgrad(upper=np.ones(3, np.float32))
    assert opt == opt and hash(opt) == hash(opt)
    # the leaves: the bound (held by init and update), l1, l2 and eta; the functions are static
    assert len(jax.tree.leaves(opt)) == 5

"""cem_loss and contrastive_explanation: CEM outcomes on a linear softmax classifier, the
gradient sources against each other, the saved history, and errors. jit/vmap/determinism are in
test_conformance.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax._src import dispatch  # the names of the trace and compile events

from xai_jax import ExplanationGenerator, aoexpgrad, cem_loss, contrastive_explanation

_rng = np.random.default_rng(0)
W = jnp.asarray(_rng.standard_normal((6, 3)), jnp.float32)
B = jnp.asarray([0.3, -0.2, 0.0], jnp.float32)
X = [jnp.asarray(_rng.uniform(0.2, 0.8, 6), jnp.float32) for _ in range(3)]
KEY = jax.random.key(0)


def predict(z):  # linear softmax classifier on [0, 1] features
    return jax.nn.softmax(4.0 * (z @ W + B[None]))


def _run(mode, x, gradient="autodiff", start=0.0, **kwargs):
    loss = cem_loss(mode, predict, x, c=10.0, kappa=0.2)
    lower, upper = (0.0, 1.0 - x) if mode == "PN" else (0.0, x)
    options = dict(optimizer=optax.sgd(0.05), num_iter=300, save_freq=100, lower=lower,
                   upper=upper, gradient=gradient) | kwargs  # fmt: skip
    x0 = start * upper  # a point of the box: its corner 0, or a fraction of the way up
    return loss, contrastive_explanation(KEY, loss, x0, **options)


@pytest.mark.parametrize(("i", "start"), [(0, 0.0), (1, 0.0), (2, 0.0), (0, 0.5), (1, 0.9)])
def test_pertinent_negative_changes_the_class(i, start):
    loss, res = _run("PN", X[i], start=start)
    assert bool(res.found)
    t = int(jnp.argmax(predict(X[i][None])[0]))
    assert int(jnp.argmax(predict((X[i] + res.explanation)[None])[0])) != t
    assert np.all(np.asarray(res.explanation) >= 0)
    assert np.all(np.asarray(res.explanation) <= np.asarray(1 - X[i]) + 1e-6)
    assert float(res.best_loss) == pytest.approx(float(loss(res.explanation)), rel=1e-5)


@pytest.mark.parametrize(("i", "start"), [(0, 0.0), (1, 0.0), (2, 0.0), (0, 0.5), (2, 1.0)])
def test_pertinent_positive_keeps_the_class(i, start):
    _, res = _run("PP", X[i], start=start)
    assert bool(res.found)
    t = int(jnp.argmax(predict(X[i][None])[0]))
    assert int(jnp.argmax(predict(res.explanation[None])[0])) == t
    assert np.all(np.asarray(res.explanation) <= np.asarray(X[i]) + 1e-6)


@pytest.mark.parametrize("gradient", ["urv", "numerical"])
def test_black_box_gradients_reach_what_autodiff_reaches(gradient):
    kwargs = {"gradient_kwargs": {"num_samples": 64}} if gradient == "urv" else {}
    _, exact = _run("PN", X[0])
    _, approx = _run("PN", X[0], gradient=gradient, **kwargs)
    assert bool(approx.found) and bool(exact.found)
    assert float(approx.best_loss) == pytest.approx(float(exact.best_loss), abs=0.5)


def test_numpy_classifier_through_pure_callback():
    Wn, Bn = np.asarray(W), np.asarray(B)

    def numpy_predict(z):
        s = 4.0 * (np.asarray(z) @ Wn + Bn)
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    loss = cem_loss("PN", numpy_predict, X[0], c=10.0, kappa=0.2)
    ref = cem_loss("PN", predict, X[0], c=10.0, kappa=0.2)
    d = jnp.full(6, 0.1)
    assert float(loss(d)) == pytest.approx(float(ref(d)), rel=1e-5)
    res = contrastive_explanation(KEY, loss, jnp.zeros(6), optimizer=optax.sgd(0.05),
                                  gradient="numerical", num_iter=50, save_freq=25,
                                  lower=0.0, upper=1 - X[0])  # fmt: skip
    assert res.history.shape == (2, 6)


def test_history_losses_and_autoencoder_term():
    ae = lambda z: 0.5 * z  # a (bad) autoencoder: the term is |z/2|^2 * gamma
    loss = cem_loss("PP", predict, X[0], gamma=2.0, autoencoder=ae)
    plain = cem_loss("PP", predict, X[0], gamma=2.0)
    d = jnp.full(6, 0.4)
    assert float(loss(d) - plain(d)) == pytest.approx(2.0 * float(jnp.sum((0.5 * d) ** 2)))
    res = contrastive_explanation(KEY, loss, jnp.zeros(6), optimizer=optax.sgd(0.01),
                                  num_iter=25, save_freq=10)  # fmt: skip
    assert res.history.shape == (2, 6) and res.losses.shape == (25,)
    # the saved iterates are those after steps 10 and 20
    again = contrastive_explanation(KEY, loss, jnp.zeros(6), optimizer=optax.sgd(0.01),
                                    num_iter=10, save_freq=10)  # fmt: skip
    np.testing.assert_allclose(res.history[0], again.history[0], rtol=1e-6)


BAD = [
    (lambda: cem_loss("PX", predict, X[0]), ValueError, "mode='PX' is not one of"),
    (lambda: cem_loss("PN", predict, X[0], c=-1.0), ValueError, "c must be >= 0"),
    (lambda: cem_loss("PN", lambda z: z.sum(1), X[0]), ValueError, "classifier"),
    (lambda: contrastive_explanation(KEY, jnp.sum, X[0], optimizer=optax.sgd(0.1), gradient="adjoint"), ValueError, "gradient='adjoint' is not one of"),
    (lambda: contrastive_explanation(KEY, jnp.sum, X[0], optimizer=optax.sgd(0.1), num_iter=10, save_freq=20), ValueError, "save_freq=20 exceeds num_iter=10"),
    (lambda: contrastive_explanation(KEY, jnp.sum, X[0], optimizer=optax.sgd(0.1), num_iter=0), ValueError, "num_iter must be >= 1"),
    (lambda: contrastive_explanation(KEY, jnp.sum, X[0], optimizer=optax.sgd(0.1), lower=jnp.zeros(3)), ValueError, "lower must be a scalar or of x0's shape"),
    (lambda: contrastive_explanation(KEY, jnp.sum, X[0], optimizer=optax.sgd(0.1), lower=1.0, upper=0.0), ValueError, "lower must not exceed upper"),
    (lambda: contrastive_explanation(0, jnp.sum, X[0], optimizer=optax.sgd(0.1)), TypeError, "key must be a PRNG key"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), BAD, ids=[m for _, _, m in BAD])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------------------------
# ExplanationGenerator (seed 003's interface) and sparsity through aoexpgrad


def test_explanation_generator_with_the_seed_configuration(capsys):
    cem = ExplanationGenerator(
        loss="cem",
        optimizer="aoexpgrad",
        gradient="urv",
        loss_kwargs={"mode": "PP", "c": 100, "gamma": 300, "K": 30, "AE": lambda z: z},
        optimizer_kwargs={"l1": 0.1, "l2": 30, "eta": 1.0},
        gradient_kwargs={"mu": None, "num_iter": 150},
        num_iter=60,
        save_freq=20,
    )
    saved, meta = cem.run(X[0], KEY, inference_call=predict, progress=True)
    assert sorted(saved) == [20, 40, 60] and saved[60].shape == (6,)
    assert meta["losses"].shape == (60,)
    assert np.all(np.asarray(saved[60]) >= 0) and np.all(np.asarray(saved[60]) <= X[0] + 1e-6)
    assert "60/60" in capsys.readouterr().err  # the tqdm bar ran to the end
    again, _ = cem.run(X[0], KEY, inference_call=predict)
    np.testing.assert_array_equal(np.asarray(again[60]), np.asarray(saved[60]))  # same key


def test_aoexpgrad_l1_makes_pertinent_negatives_sparse():
    def nonzeros(l1: float) -> int:
        cem = ExplanationGenerator("cem", "aoexpgrad", "autodiff",
                                   loss_kwargs={"mode": "PN", "c": 10.0, "K": 0.2},
                                   optimizer_kwargs={"l1": l1, "l2": 0.0, "eta": 1.0},
                                   num_iter=400, save_freq=200)  # fmt: skip
        _, meta = cem.run(X[1], KEY, inference_call=predict)
        assert meta["found"]
        t = int(jnp.argmax(predict(X[1][None])[0]))
        assert int(jnp.argmax(predict((X[1] + meta["explanation"])[None])[0])) != t
        # aoexpgrad returns its averaged iterate y: entries the sparse x left decay towards 0
        return int(np.sum(np.abs(np.asarray(meta["explanation"])) > 0.05))

    assert nonzeros(3.0) < nonzeros(0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": "lime"}, ValueError, "loss='lime' is not one of"),
        ({"optimizer": "adamw"}, ValueError, "optimizer='adamw' is not one of"),
        ({"gradient": "spsa"}, ValueError, "gradient='spsa' is not one of"),
        ({"loss": 3}, TypeError, "loss must be a name or a callable"),
        ({"num_iter": 0}, ValueError, "num_iter must be >= 1"),
    ],
)
def test_explanation_generator_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        ExplanationGenerator(**kwargs)


def test_explanation_generator_needs_a_classifier():
    with pytest.raises(ValueError, match="no classifier"):
        ExplanationGenerator(loss_kwargs={"mode": "PN"}).run(X[0])


@pytest.mark.parametrize(
    ("gradient", "kwargs", "match"),
    [
        ("autodiff", {"mu": 0.1}, r"\['mu'\] unused: gradient='autodiff' takes none"),
        ("urv", {"eps": 0.1}, r"\['eps'\] unused: gradient='urv' takes num_samples, mu, batch"),
        ("numerical", {"num_samples": 4}, r"'numerical' takes eps, batch_size"),
    ],
)
def test_gradient_kwargs_the_estimator_does_not_take_raise(gradient, kwargs, match):
    with pytest.raises(ValueError, match=match):
        contrastive_explanation(
            KEY,
            lambda v: jnp.sum(v**2),
            X[0],
            optimizer=optax.sgd(0.1),
            gradient=gradient,
            num_iter=4,
            save_freq=2,
            gradient_kwargs=kwargs,
        )


def test_array_gradient_kwargs_are_traced_operands():
    # eps per feature and a traced mu, documented as valid, once refused as unhashable statics
    loss = lambda v: jnp.sum((v - 1.0) ** 2)
    eps = jnp.full(X[0].shape, 1e-2)
    res = contrastive_explanation(
        KEY,
        loss,
        X[0],
        optimizer=optax.sgd(0.1),
        gradient="numerical",
        num_iter=4,
        save_freq=2,
        gradient_kwargs={"eps": eps},
    )
    assert np.isfinite(np.asarray(res.explanation)).all()
    run = jax.jit(
        lambda mu: (
            contrastive_explanation(
                KEY,
                loss,
                X[0],
                optimizer=optax.sgd(0.1),
                gradient="urv",
                num_iter=4,
                save_freq=2,
                gradient_kwargs={"mu": mu, "num_samples": 8},
            ).explanation
        )
    )
    assert not np.array_equal(np.asarray(run(1e-2)), np.asarray(run(5e-1)))


# --------------------------------------------------------------------------------------------
# Shapes that would broadcast, optimizers passed uncalled, the default box, and recompilation


X4 = jnp.asarray([0.2, 0.4, 0.6, 0.8], jnp.float32)
W4 = jnp.asarray(_rng.standard_normal((4, 3)), jnp.float32)


def predict4(z):
    return jax.nn.softmax(z @ W4)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    ("shape", "mode"), [((2,), "PN"), ((1,), "PN"), ((3, 4), "PN"), ((1,), "PP"), ((4, 1), "PP")]
)
def test_delta_of_another_shape_than_x_raises(shape, mode, jit):
    loss = cem_loss(mode, predict4, X4)
    call = jax.jit(lambda d: loss(d)) if jit else loss
    with pytest.raises(ValueError, match=rf"delta must have the shape of the instance x, "
                                         rf"\(4,\), got {re.escape(str(shape))}"):  # fmt: skip
        call(jnp.zeros(shape))
    with pytest.raises(ValueError, match="delta must have the shape"):
        loss.valid(jnp.zeros(shape))


@pytest.mark.parametrize("jit", [False, True])
def test_autoencoder_of_another_output_shape_raises(jit):
    loss = cem_loss("PN", predict4, X4, autoencoder=lambda z: z[..., :2])
    call = jax.jit(lambda d: loss(d)) if jit else loss
    with pytest.raises(ValueError, match=r"autoencoder must return its input's shape: got "
                                         r"\(1, 2\) for a batch of shape \(1, 4\)"):  # fmt: skip
        call(jnp.zeros(4))
    unbatched = cem_loss("PP", predict4, X4, autoencoder=lambda z: z[0])  # drops the batch axis
    with pytest.raises(ValueError, match=r"got \(4,\) for a batch of shape \(1, 4\)"):
        unbatched(jnp.zeros(4))
    with pytest.raises(ValueError, match="autoencoder must return"):  # before the loop runs
        contrastive_explanation(KEY, loss, jnp.zeros(4), optimizer=optax.sgd(0.1), num_iter=2,
                                save_freq=1)  # fmt: skip


@pytest.mark.parametrize(
    ("optimizer", "match"),
    [
        (optax.adam, r"optimizer must be an optax GradientTransformation \(an object with init "
                     r"and update\), got function adam: call the factory, e\.g\. "
                     r"optax\.adam\(learning_rate\)"),
        (aoexpgrad, r"got function aoexpgrad: call the factory"),
        ("adam", r"got str 'adam'"),
        (None, r"got NoneType None"),
    ],
)  # fmt: skip
def test_an_uncalled_optax_factory_raises_a_clear_type_error(optimizer, match):
    with pytest.raises(TypeError, match=match):
        contrastive_explanation(KEY, jnp.sum, X4, optimizer=optimizer, num_iter=2, save_freq=1)


def test_explanation_generator_refuses_a_transformation_and_checks_the_factory():
    with pytest.raises(TypeError, match="got the transformation itself: pass its factory"):
        ExplanationGenerator(optimizer=optax.adam(1e-2))
    # explicit bounds: the optimizer is built (and checked) in __init__
    with pytest.raises(TypeError, match=r"optimizer must return an optax GradientTransformation"):
        ExplanationGenerator(optimizer=lambda **kw: optax.adam,
                             optimizer_kwargs={"lower": 0.0, "upper": 1.0})  # fmt: skip
    with pytest.raises(TypeError, match=r"optimizer must return an optax GradientTransformation"):
        ExplanationGenerator(optimizer=lambda **kw: optax.adam, loss_kwargs={"mode": "PN"},
                             num_iter=2, save_freq=1).run(X4, inference_call=predict4)  # fmt: skip


def _generator(mode="PN", **optimizer_kwargs):
    return ExplanationGenerator(
        "cem", "aoexpgrad", "autodiff", loss_kwargs={"mode": mode, "c": 10.0, "K": 0.2},
        optimizer_kwargs={"l1": 0.01, "l2": 0.0, "eta": 1.0, **optimizer_kwargs},
        num_iter=20, save_freq=10,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["PN", "PP"])
@pytest.mark.parametrize("scale", [255.0, -1.0])
def test_default_box_refuses_inputs_outside_the_unit_interval(mode, scale):
    image = X4 * scale  # [0, 255] pixels, or negative (standardised) features
    with pytest.raises(ValueError, match=r"outside \[0, 1\]: the default box .* "
                                         r"optimizer_kwargs=\{'lower': \.\.\., 'upper'"):  # fmt: skip
        _generator(mode).run(image, KEY, inference_call=lambda z: predict4(z / scale))
    # an explicit box is the user's: it runs, and the search stays inside it
    lower, upper = (0.0, 255.0 - image) if mode == "PN" else (jnp.minimum(image, 0.0),
                                                              jnp.maximum(image, 0.0))  # fmt: skip
    _, meta = _generator(mode, lower=lower, upper=upper).run(
        image, KEY, inference_call=lambda z: predict4(z / scale)
    )
    explanation = np.asarray(meta["explanation"])
    assert np.all(explanation >= np.asarray(lower) - 1e-5)
    assert np.all(explanation <= np.asarray(upper) + 1e-5)


_COMPILE_EVENTS = (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT)
_events: list[str] | None = None  # collecting while a list


def _on_event(event: str, duration: float, **kwargs) -> None:
    if _events is not None and event in _COMPILE_EVENTS:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def _compiles(call) -> list[str]:
    """The trace and compile events of `call()` (after its result is ready)."""
    global _events
    _events = []
    try:
        jax.block_until_ready(call())
        return _events
    finally:
        _events = None


def test_inline_aoexpgrad_reuses_the_compiled_loop():
    def run(x0, l1=0.1):
        return contrastive_explanation(KEY, cem_loss("PN", predict4, X4), x0,
                                       optimizer=aoexpgrad(l1, 0.0, lower=0.0, upper=1.0 - X4),
                                       num_iter=6, save_freq=3).explanation  # fmt: skip

    starts = [jnp.asarray(np.full(4, v, np.float32)) for v in (0.0, 0.1)]
    assert _compiles(lambda: run(starts[0]))  # the first call compiles
    assert _compiles(lambda: run(starts[1])) == []  # a new optimizer object, the same program
    assert _compiles(lambda: run(starts[0], l1=0.2))  # another value: another program


@pytest.mark.parametrize("mode", ["PN", "PP"])
def test_explanation_generator_runs_compile_once(mode):
    generator = _generator(mode)
    generator.run(X[0], KEY, inference_call=predict, progress=False)
    assert _compiles(lambda: generator.run(X[1], KEY, inference_call=predict)[1]["losses"]) == []
    other = _generator(mode)  # another generator of the same configuration: the same program
    assert _compiles(lambda: other.run(X[2], KEY, inference_call=predict)[1]["losses"]) == []
    fixed = _generator(mode, lower=0.0, upper=0.5)  # explicit bounds: built once, in __init__
    fixed.run(X[0], KEY, inference_call=predict)
    assert _compiles(lambda: fixed.run(X[1], KEY, inference_call=predict)[1]["losses"]) == []


def test_explanation_generator_with_a_progress_bar_compiles_once(capsys):
    generator = _generator()
    generator.run(X[0], KEY, inference_call=predict, progress=True)
    assert _compiles(lambda: generator.run(X[1], KEY, inference_call=predict,
                                           progress=True)[1]["losses"]) == []  # fmt: skip
    assert "20/20" in capsys.readouterr().err

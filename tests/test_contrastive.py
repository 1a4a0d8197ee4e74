"""cem_loss and contrastive_explanation: CEM outcomes on a linear softmax classifier, the
gradient sources against each other, the saved history, and errors. jit/vmap/determinism are in
test_conformance.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xai_jax import ExplanationGenerator, cem_loss, contrastive_explanation

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

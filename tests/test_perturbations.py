"""gaussian_perturbation and bernoulli_perturbation: layout, statistics, segments, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import bernoulli_perturbation, gaussian_perturbation

KEY = jax.random.key(0)


def test_gaussian_row_zero_and_moments():
    x = jnp.array([1.0, -2.0, 3.0])
    scale = jnp.array([0.5, 1.0, 2.0])
    z = gaussian_perturbation(KEY, x, 20001, scale=scale)
    assert z.shape == (20001, 3) and z.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(z[0]), np.asarray(x))
    noise = (np.asarray(z[1:]) - np.asarray(x)) / np.asarray(scale)
    # 20000 standard normals: mean within ~4 sigma/sqrt(n), std within 2%.
    np.testing.assert_allclose(noise.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(noise.std(0), 1, rtol=0.02)


def test_gaussian_around_mean_like_lime_tabular():
    x = jnp.zeros(2)
    mean = jnp.array([10.0, -10.0])
    z = np.asarray(gaussian_perturbation(KEY, x, 5001, scale=jnp.array([1.0, 3.0]), mean=mean))
    np.testing.assert_array_equal(z[0], [0, 0])
    np.testing.assert_allclose(z[1:].mean(0), [10, -10], atol=0.2)
    np.testing.assert_allclose(z[1:].std(0), [1, 3], rtol=0.05)


def test_gaussian_image_shape_and_float64(x64):
    x = jnp.ones((2, 3, 3), jnp.float64)
    z = gaussian_perturbation(KEY, x, 4)
    assert z.shape == (4, 2, 3, 3) and z.dtype == jnp.float64


def test_gaussian_single_sample_is_x():
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(np.asarray(gaussian_perturbation(KEY, x, 1)), [[0, 1, 2]])


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_bernoulli_frequency(p):
    masks, samples = bernoulli_perturbation(KEY, jnp.ones(50), 4001, p=p, baseline=-1.0)
    masks = np.asarray(masks)
    assert masks.shape == (4001, 50) and masks.dtype == bool
    assert masks[0].all()
    assert abs(masks[1:].mean() - p) < 0.01
    np.testing.assert_array_equal(np.asarray(samples), np.where(masks, 1.0, -1.0))


def test_bernoulli_segments_switch_whole_superpixels():
    image = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)  # [H, W, C]
    segments = jnp.array([[0, 0, 1, 1], [2, 2, 1, 1]])  # [H, W]
    baseline = jnp.full((2, 4, 3), -1.0)
    masks, samples = bernoulli_perturbation(KEY, image, 64, segments=segments, baseline=baseline)
    assert masks.shape == (64, 3) and samples.shape == (64, 2, 4, 3)
    masks, samples, image = np.asarray(masks), np.asarray(samples), np.asarray(image)
    labels = np.asarray(segments)
    for m, s in zip(masks, samples, strict=True):
        kept = m[labels][..., None]  # per pixel, all channels
        np.testing.assert_array_equal(s, np.where(kept, image, -1.0))
    assert masks[1:].any() and not masks[1:].all()


def test_bernoulli_segments_under_jit_need_num_segments():
    segments = jnp.array([0, 1, 1, 2])
    f = jax.jit(lambda k, s: bernoulli_perturbation(k, jnp.ones(4), 8, segments=s, num_segments=3))
    masks, _ = f(KEY, segments)
    assert masks.shape == (8, 3)
    with pytest.raises(ValueError, match="num_segments is required"):
        jax.jit(lambda k, s: bernoulli_perturbation(k, jnp.ones(4), 8, segments=s))(KEY, segments)
    # A traced label out of range cannot be checked: NaN, never a silently clamped mask.
    _, samples = f(KEY, jnp.array([0, 1, 1, 7]))
    assert np.isnan(np.asarray(samples)[:, 3]).all()
    assert np.isfinite(np.asarray(samples)[:, :3]).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: gaussian_perturbation(KEY, jnp.ones(3), 0), ValueError, "num_samples must be >= 1"),
        (lambda: gaussian_perturbation(KEY, jnp.ones(3), 2.5), TypeError, "num_samples must be an int"),
        (lambda: gaussian_perturbation(KEY, jnp.ones(3), 4, scale=-1.0), ValueError, "scale must be >= 0"),
        (lambda: gaussian_perturbation(KEY, jnp.ones(3), 4, scale=jnp.ones(4)), ValueError, "scale of shape"),
        (lambda: gaussian_perturbation(KEY, jnp.ones(3), 4, mean=jnp.ones((2, 3))), ValueError, "mean of shape .2, 3. does not broadcast"),
        (lambda: gaussian_perturbation(0, jnp.ones(3), 4), TypeError, "key must be a PRNG key"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 4, p=1.5), ValueError, r"p must be in \[0, 1\]"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 0), ValueError, "num_samples must be >= 1"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 4, segments=jnp.ones(3)), TypeError, "segments must hold integer feature ids"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 4, segments=jnp.array([0, -1, 1])), ValueError, ">= 0"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones((2, 3)), 4, segments=jnp.zeros(3, int)), ValueError, "leading axes"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 4, segments=jnp.array([0, 1, 5]), num_segments=3), ValueError, "num_segments=3"),
        (lambda: bernoulli_perturbation(KEY, jnp.ones(3), 4, baseline=jnp.ones(2)), ValueError, "baseline of shape"),
    ],
)  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()

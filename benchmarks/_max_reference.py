"""Loop-style NumPy references of seed 003 (the MAX library): AoExpGrad, the URV estimator and
the CEM loss, one input at a time. Used by the optimizer tests and the CEM benchmark."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import lambertw


class MaxAOExpGrad:
    """MAX's `AOExpGrad` (maxi/lib/computation_components/optimizer/ao_exp_grad.py), in NumPy.

    `buggy=True` keeps MAX's branch for `abc >= 15` (the asymptote of W(abc), not of
    W(exp(abc))); `buggy=False` uses `lambertw(exp(abc))` everywhere, which is what MAX computes
    whenever that branch is not hit. `max_abc` records the largest `abc` seen.
    """

    def __init__(self, func_p, x0, lower, upper, l1, l2, eta, buggy=True):
        self.func_p = func_p
        self.x = np.array(x0, dtype=np.float64)
        self.y = np.array(x0, dtype=np.float64)
        self.d = self.x.size
        self.lower, self.upper = lower, upper
        self.eta, self.l1, self.l2 = eta, l1, l2
        self.lam, self.t, self.beta = 0.0, 0.0, 0
        self.h = np.zeros(self.x.shape)
        self.buggy = buggy
        self.max_abc = -np.inf

    def update(self):
        self.t += 1.0
        self.beta += self.t
        g = self.func_p(self.y)
        self.lam += (self.t * np.linalg.norm((g - self.h).flatten(), ord=np.inf)) ** 2
        self.md(g)
        self.h[:] = g
        return self.y

    def md(self, g):
        beta = 1.0 / self.d
        alpha = np.sqrt(self.lam) / np.sqrt(np.log(self.d + 1)) * self.eta
        if alpha == 0.0:
            alpha += 1e-6
        z = (np.log(np.abs(self.x) / beta + 1.0)) * np.sign(self.x) - (
            self.t * g - self.t * self.h + (self.t + 1) * g
        ) / alpha
        x_sgn = np.sign(z)
        if self.l2 == 0.0:
            x_val = (
                beta * np.exp(np.maximum(np.abs(z) - self.l1 * (self.t + 1) / alpha, 0.0)) - beta
            )
        else:
            a = beta
            b = self.l2 * (self.t + 1) / alpha
            c = np.minimum(self.l1 * (self.t + 1) / alpha - np.abs(z), 0.0)
            abc = -c + np.log(a * b) + a * b
            self.max_abc = max(self.max_abc, float(abc.max()))
            exact = lambertw(np.exp(np.minimum(abc, 700.0)), k=0).real
            if self.buggy:
                with np.errstate(invalid="ignore", divide="ignore"):
                    la = np.log(abc)
                    asym = la - np.log(la) + np.log(la) / la
                w = np.where(abc >= 15.0, asym, exact)
            else:
                w = exact
            x_val = w / b - a
        y = x_sgn * x_val
        self.x = np.clip(y, self.lower, self.upper)
        self.y = (self.t / self.beta) * self.x + ((self.beta - self.t) / self.beta) * self.y


class URVGradientEstimator:
    """seed 003's `URVGradientEstimator` (a Python loop over `num_iter` directions, `t` counting
    calls); `loss` is the callable behind `loss.get_loss`."""

    def __init__(
        self, loss: Callable, img_size: int, mu: float | None = None, num_iter=100, seed=None
    ):
        self.loss = loss
        self.t, self.d, self.q = 0, img_size, num_iter
        self.mu = mu
        self.randomState = np.random.RandomState(seed)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        self.t += 1.0
        mu = 1.0 / np.sqrt(self.t) / np.sqrt(self.d) if self.mu is None else self.mu
        tilde_f_x_r = self.loss(data)
        g = np.zeros(data.shape)
        for _ in range(self.q):
            u = self.randomState.normal(size=data.shape)
            u_norm = np.linalg.norm(u)
            u = u / u_norm
            tilde_f_x_l = self.loss(data + mu * u)
            g += self.d / mu / self.q * (tilde_f_x_l - tilde_f_x_r) * u
        return g


def cem_pn_loss(predict, x0: np.ndarray, c: float, kappa: float):
    """The MAX library's PN loss without autoencoder: `c * max(p_t - max_{i!=t} p_i, -K)`."""
    t = int(np.argmax(predict(x0[None])[0]))

    def loss(delta):
        p = predict((x0 + delta)[None])[0]
        return c * max(p[t] - np.max(np.delete(p, t)), -kappa)

    return loss

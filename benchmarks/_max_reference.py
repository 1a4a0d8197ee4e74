"""Loop-style NumPy references of seed 003 (the MAX library): AoExpGrad, the URV estimator and
the CEM loss, one input at a time. Used by the optimizer tests and the CEM benchmark."""

from __future__ import annotations

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


def urv_loop(loss, data: np.ndarray, t: int, q: int, rng: np.random.RandomState, mu=None):
    """seed 003's `URVGradientEstimator.__call__`: a Python loop over `q` directions."""
    d = data.size
    mu = 1.0 / np.sqrt(t) / np.sqrt(d) if mu is None else mu
    f0 = loss(data)
    g = np.zeros(data.shape)
    for _ in range(q):
        u = rng.normal(size=data.shape)
        u = u / np.linalg.norm(u)
        g += d / mu / q * (loss(data + mu * u) - f0) * u
    return g


def cem_pn_loss(predict, x0: np.ndarray, c: float, kappa: float):
    """The MAX library's PN loss without autoencoder: `c * max(p_t - max_{i!=t} p_i, -K)`."""
    t = int(np.argmax(predict(x0[None])[0]))

    def loss(delta):
        p = predict((x0 + delta)[None])[0]
        return c * max(p[t] - np.max(np.delete(p, t)), -kappa)

    return loss

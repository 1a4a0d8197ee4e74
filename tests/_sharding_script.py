"""Multi-device checks of `explain_sharded`, run by `tests/test_sharding.py` in subprocesses.

Not a test module: it needs several (forced) host devices, which JAX fixes at start-up, so the
test runs it as `python -m tests._sharding_script single OUT` with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, or as two processes
`python -m tests._sharding_script multi PROCESS_ID PORT OUT` with 2 devices each, joined by
`jax.distributed` into one 4-device mesh. It computes everything and writes a JSON report that
the test asserts on; nothing runs on import (pytest's doctest collection imports it).

For every case the report holds the sharded result's difference to

- `whole`: the single-device call on all rows (`lime(key, f, x)`, ...), and
- `blocks`: the same method called on one device, on each device's block of rows (padded as
  `explain_sharded` pads, with that block's row keys), concatenated: what every device
  computes, so equality here says the sharding itself adds nothing.
"""

import json
import math
import sys
import time


def _setup():
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")


def _methods():
    """`({name: (method_fn, make_x(n), kwargs, keyed)}, {name: whole(key, x, kwargs)})`: the
    method per block of rows, and the same method on one device for all rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from xai_jax import (
        cem_loss,
        contrastive_explanation,
        integrated_gradients,
        kernel_shap,
        lime,
    )

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 8)).astype(np.float32) / np.sqrt(6)
    w2 = rng.standard_normal((8, 3)).astype(np.float32) / np.sqrt(8)

    def model(z):
        return jax.nn.softmax(jnp.tanh(z @ w1) @ w2)

    def ig(z, b, t):
        return integrated_gradients(model, z, b, target=t, n_steps=16)

    def lime_rows(k, z):
        return lime(k, model, z, num_samples=256, target=1)

    def shap_rows(k, z, background):
        return kernel_shap(k, model, z, background, num_samples=32, target=2)

    def shap_stderr_rows(k, z, background):  # the sampler/estimator/stderr options pass through
        return kernel_shap(
            k, model, z, background, num_samples=32, target=2, sampler="leverage",
            estimator="cubic", return_stderr=True,
        )  # fmt: skip

    def cem_rows(k, z):
        def one(k1, z1):
            loss = cem_loss("PN", model, z1, c=1.0, kappa=0.05)
            return contrastive_explanation(
                k1, loss, jnp.zeros_like(z1), optimizer=optax.sgd(0.1),
                gradient="urv", num_iter=10, save_freq=5, lower=-2.0, upper=2.0,
                gradient_kwargs={"num_samples": 8},
            )  # fmt: skip

        return jax.vmap(one)(k, z)

    def xs(n, seed=1):
        r = np.random.default_rng(seed + n)
        x = r.standard_normal((n, 6)).astype(np.float32)
        return x, r.standard_normal((n, 6)).astype(np.float32), np.arange(n) % 3

    background = np.random.default_rng(5).standard_normal((5, 6)).astype(np.float32)
    return {
        "integrated_gradients": (ig, lambda n: xs(n), {}, False),
        "lime": (lime_rows, lambda n: xs(n)[:1], {}, True),
        "kernel_shap": (shap_rows, lambda n: xs(n)[:1], {"background": background}, True),
        "kernel_shap_stderr": (
            shap_stderr_rows,
            lambda n: xs(n)[:1],
            {"background": background},
            True,
        ),
        "contrastive_explanation": (cem_rows, lambda n: xs(n)[:1], {}, True),
    }, {
        "integrated_gradients": lambda key, x, kw: ig(*x),
        "lime": lambda key, x, kw: lime(key, model, x[0], num_samples=256, target=1),
        "kernel_shap": lambda key, x, kw: kernel_shap(
            key, model, x[0], kw["background"], num_samples=32, target=2
        ),
        "kernel_shap_stderr": lambda key, x, kw: shap_stderr_rows(key, x[0], kw["background"]),
        "contrastive_explanation": lambda key, x, kw: cem_rows(
            jax.random.split(key, x[0].shape[0]), x[0]
        ),
    }


def _compare(out, ref) -> dict:
    """Bitwise equality and largest difference of two pytrees; equal infinities (CEM's
    `best_loss` where nothing valid was found) count as equal, NaN as a failure."""
    import jax
    import numpy as np

    a = [np.asarray(leaf) for leaf in jax.tree.leaves(out)]
    b = [np.asarray(leaf) for leaf in jax.tree.leaves(ref)]
    same_shapes = [(x.shape, x.dtype) for x in a] == [(y.shape, y.dtype) for y in b]
    diffs = [math.inf]
    if same_shapes:
        diffs = [float(np.max(np.where(x == y, 0.0, np.abs(x.astype(np.float64) - y)), initial=0))
                 for x, y in zip(a, b, strict=True)]  # fmt: skip
    return {
        "shapes": same_shapes,
        "bitwise": same_shapes and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)),
        "max_abs_diff": max(diffs),
        "no_nan": not any(np.isnan(x).any() for x in a if np.issubdtype(x.dtype, np.floating)),
    }


def _blocks(method_fn, key, x, kwargs, blocks: int):
    """Single-device calls on each device's block of rows, as `explain_sharded` forms them."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = x[0].shape[0]
    padded = -(-n // blocks) * blocks
    index = np.minimum(np.arange(padded), n - 1)
    rows = [np.asarray(m)[index] for m in x]
    if key is not None:
        rows = [jax.random.split(key, n)[index], *rows]
    fn = jax.jit(lambda *r: method_fn(*r, **kwargs))
    size = padded // blocks
    parts = [fn(*(r[i : i + size] for r in rows)) for i in range(0, padded, size)]
    return jax.tree.map(lambda *p: jnp.concatenate(p)[:n], *parts)


def single(out_path: str) -> None:
    """4 host devices: a 1-D mesh and a 2x2 mesh, batches of 8 and 6 rows."""
    _setup()
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from xai_jax.sharding import explain_sharded

    start = time.perf_counter()
    devices = np.array(jax.devices())
    assert devices.size == 4, devices
    meshes = {
        "1d": (Mesh(devices, ("data",)), None),
        "2x2": (Mesh(devices.reshape(2, 2), ("a", "b")), None),
        "2x2[a]": (Mesh(devices.reshape(2, 2), ("a", "b")), "a"),  # replicated along b
    }
    key = jax.random.key(42)
    methods, wholes = _methods()
    report: dict = {"device_count": jax.device_count(), "cases": {}}
    for name, (method_fn, make_x, kwargs, keyed) in methods.items():
        for n in (8, 6):
            x = make_x(n)
            whole = wholes[name](key, x, kwargs)
            for mesh_name, (mesh, axes) in meshes.items():
                if mesh_name == "2x2[a]" and (name, n) != ("lime", 6):
                    continue  # one case of a batch split over some of the mesh's axes
                out = explain_sharded(
                    method_fn, x, mesh=mesh, key=key if keyed else None, axis_names=axes,
                    **kwargs,
                )  # fmt: skip
                case = {
                    "whole": _compare(out, whole),
                    "spec": str(jax.tree.leaves(out)[0].sharding.spec),
                }
                if (name, n, mesh_name) == ("lime", 6, "1d"):  # where `whole` is not bitwise: why
                    blocks = _blocks(method_fn, key, x, kwargs, 4)
                    case["blocks"] = _compare(out, blocks)
                report["cases"][f"{name}/n={n}/{mesh_name}"] = case

    # a second call with same shapes (other values, other key) must not trace or compile again
    traces = []
    methods_fn = methods["kernel_shap"][0]

    def counted(k, z, background):
        traces.append(z.shape)
        return methods_fn(k, z, background)

    mesh = meshes["2x2"][0]
    x = methods["kernel_shap"][1](6)[0]
    background = methods["kernel_shap"][2]["background"]
    first = explain_sharded(counted, x, mesh=mesh, key=key, background=background)
    compiles = []
    jax.config.update("jax_log_compiles", True)
    import logging

    class _Count(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage():
                compiles.append(record.getMessage())

    handler = _Count()
    logging.getLogger("jax").addHandler(handler)
    second = explain_sharded(
        counted, x + 1.0, mesh=mesh, key=jax.random.key(7), background=background * 2.0
    )
    jax.block_until_ready(second)
    logging.getLogger("jax").removeHandler(handler)
    jax.config.update("jax_log_compiles", False)
    report["recompile"] = {
        "traces": len(traces),
        "compiles_on_second_call": compiles,
        "kwargs_array_changes_result": not np.array_equal(first, second),
    }
    report["seconds"] = time.perf_counter() - start
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)


def multi(process_id: int, port: int, out_path: str) -> None:
    """One of two processes with 2 host devices each, one global 4-device mesh."""
    start = time.perf_counter()
    _setup()
    import jax

    report: dict = {"process_id": process_id}
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=2,
            process_id=process_id,
            initialization_timeout=60,
        )
        report["process_count"] = jax.process_count()
        report["device_count"] = jax.device_count()
        report["local_device_count"] = jax.local_device_count()
    except Exception as err:  # the test skips with this reason
        report["unavailable"] = f"{type(err).__name__}: {err}"
        with open(out_path, "w") as f:
            json.dump(report, f)
        return

    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh

    from xai_jax.sharding import explain_sharded

    mesh = Mesh(np.array(jax.devices()), ("data",))
    key = jax.random.key(42)
    methods, wholes = _methods()
    report["cases"] = {}
    # even (8) and uneven (6) batches for IG; the uneven one with per-row keys for lime
    for name, n in (("integrated_gradients", 8), ("integrated_gradients", 6), ("lime", 6)):
        method_fn, make_x, kwargs, keyed = methods[name]
        x = make_x(n)
        out = explain_sharded(method_fn, x, mesh=mesh, key=key if keyed else None, **kwargs)
        leaf = jax.tree.leaves(out)[0]
        gathered = multihost_utils.process_allgather(out, tiled=True)
        # the references run on this process's own first device
        with jax.default_device(jax.local_devices()[0]):
            whole = wholes[name](key, x, kwargs)
            blocks = _blocks(method_fn, key, x, kwargs, 4) if keyed else whole
        report["cases"][f"{name}/n={n}"] = {
            "whole": _compare(gathered, whole),
            "blocks": _compare(gathered, blocks),  # lime: the same bits as on one device
            "global_shape": list(leaf.shape),
            "fully_addressable": leaf.is_fully_addressable,
            "spec": str(leaf.sharding.spec),
        }
    report["seconds"] = time.perf_counter() - start
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "single":
        single(sys.argv[2])
    else:
        multi(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

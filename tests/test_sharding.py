"""`explain_sharded` and per-row keys: sharded results equal single-device ones, one host or two.

Several devices need JAX started with `XLA_FLAGS=--xla_force_host_platform_device_count=N`, so
the multi-device checks run in subprocesses (`tests/_sharding_script.py`), started together
before the first test (the in-process tests run meanwhile): one process with 4 host devices (a 1-D
mesh and a 2x2 mesh, batches of 8 and 6 rows), and two processes with 2 devices each joined by
`jax.distributed` over loopback into one 4-device mesh. They write JSON reports; the tests
assert on them. Argument checks and per-row keys run here, on a 1-device mesh.

Equality: `integrated_gradients` and `contrastive_explanation` (vmapped over rows, URV
gradients, one key per row) come out bit for bit equal to the single-device call on the whole
batch. `lime` and `kernel_shap` come out bit for bit equal to the single-device call on each
device's block of rows, but can differ from the whole-batch call in the last bits (measured
<= 1.2e-7): XLA compiles a batch of 2 rows with other fusions than one of 8, as `lime`'s own
`batch_size` does. They are held to `atol=1e-6` on values of order 1.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from benchmarks.bench_sharding import host_devices_env
from xai_jax import integrated_gradients, kernel_shap, lime
from xai_jax.sharding import explain_sharded

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
ROUND_OFF = 1e-6  # lime and kernel_shap vs the whole-batch call (see the module docstring)
BITWISE = ("integrated_gradients", "contrastive_explanation")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list, devices: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests._sharding_script", *map(str, args)],
            cwd=ROOT,
            env=host_devices_env(devices),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _finish(proc: subprocess.Popen, report: Path, log: Path) -> dict:
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode != 0 or not report.exists():
        tail = log.read_text()[-4000:]
        return {"failed": f"exit status {proc.returncode}:\n{tail}"}
    return json.loads(report.read_text())


@pytest.fixture(scope="module", autouse=True)
def _runs(request, tmp_path_factory):
    """Starts the subprocesses before this module's first test (when a selected test reads
    their reports), so the in-process tests run meanwhile; stops any left at the end."""
    selected = [i for i in request.session.items if getattr(i, "module", None) is request.module]
    if not any("reports" in item.fixturenames for item in selected):
        yield {}
        return
    tmp = tmp_path_factory.mktemp("sharding")
    port = _free_port()
    args = {
        "single": (["single", tmp / "single.json"], 4),
        "multi0": (["multi", 0, port, tmp / "multi0.json"], 2),
        "multi1": (["multi", 1, port, tmp / "multi1.json"], 2),
    }
    runs = {
        name: (_start(a, devices, tmp / f"{name}.log"), tmp / f"{name}.json", tmp / f"{name}.log")
        for name, (a, devices) in args.items()
    }
    yield runs
    for proc, _, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def reports(_runs) -> dict:
    return {name: _finish(*run) for name, run in _runs.items()}


@pytest.fixture(scope="module")
def single(reports) -> dict:
    if "failed" in reports["single"]:
        pytest.fail(f"the 4-device run failed: {reports['single']['failed']}")
    return reports["single"]


# --------------------------------------------------------------------------------------------
# one device, in this process: arguments, caching, per-row keys


MESH = Mesh(jax.devices()[:1], ("data",))
W = jnp.array([[1.0, -1.0, 0.5], [2.0, 0.5, -0.3], [0.1, 0.2, 0.3], [-1.0, 0.0, 1.0]])


def _model(z):
    return jax.nn.softmax(jnp.tanh(z) @ W)


def _x(n=5):
    return jax.random.normal(jax.random.key(3), (n, 4))


def _ig(z, t):
    return integrated_gradients(_model, z, target=t, n_steps=8)


def _lime(k, z):
    return lime(k, _model, z, num_samples=64, target=1)


def test_one_device_mesh_equals_plain_call():
    x, t = _x(), jnp.array([0, 1, 2, 0, 1])  # a tuple: per-row targets go along with x
    np.testing.assert_array_equal(explain_sharded(_ig, (x, t), mesh=MESH), _ig(x, t))
    np.testing.assert_array_equal(explain_sharded(_ig, (np.asarray(x), t), mesh=MESH), _ig(x, t))


def test_inside_jit_and_grad_and_same_key_same_bits():
    x, t = _x(), jnp.array([0, 1, 2, 0, 1])
    sharded = lambda z: explain_sharded(_ig, (z, t), mesh=MESH)
    np.testing.assert_allclose(jax.jit(sharded)(x), _ig(x, t), rtol=1e-6, atol=1e-7)
    grad = jax.grad(lambda z: jnp.sum(sharded(z) ** 2))(x)
    expected = jax.grad(lambda z: jnp.sum(_ig(z, t) ** 2))(x)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    runs = [explain_sharded(_lime, x, mesh=MESH, key=jax.random.key(k)).coef for k in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_traces_once_for_same_shapes():
    traces = []

    def noisy(k, z, scale):  # one normal draw per row, from the row's key
        traces.append(z.shape)
        return z * scale + jax.vmap(lambda k1: jax.random.normal(k1, z.shape[1:]))(k)

    x = _x()
    a = explain_sharded(noisy, x, mesh=MESH, key=jax.random.key(0), scale=jnp.float32(1.0))
    b = explain_sharded(noisy, x + 1, mesh=MESH, key=jax.random.key(1), scale=jnp.float32(2.0))
    jax.block_until_ready((a, b))
    assert len(traces) == 1
    explain_sharded(noisy, _x(3), mesh=MESH, key=jax.random.key(0), scale=jnp.float32(1.0))
    assert len(traces) == 2  # another batch size is another program


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: explain_sharded(3, _x(), mesh=MESH), TypeError, "method_fn must be callable"),
        (lambda: explain_sharded(_ig, _x(), mesh=jax.devices()), TypeError, "mesh must be a jax.sharding.Mesh"),
        (lambda: explain_sharded(_ig, _x(), mesh=MESH, axis_names="batch"), ValueError, r"'batch'.*mesh's axes are \('data',\)"),
        (lambda: explain_sharded(_ig, _x(), mesh=MESH, axis_names=()), ValueError, "axis_names"),
        (lambda: explain_sharded(_ig, _x(), mesh=MESH, axis_names=("data", "data")), ValueError, "repeat"),
        (lambda: explain_sharded(_ig, jnp.float32(1.0), mesh=MESH), ValueError, "x must be at least 1-D"),
        (lambda: explain_sharded(_ig, jnp.zeros((0, 4)), mesh=MESH), ValueError, "empty batch"),
        (lambda: explain_sharded(_ig, (), mesh=MESH), ValueError, "non-empty tuple"),
        (lambda: explain_sharded(_ig, (_x(5), jnp.zeros(4, int)), mesh=MESH), ValueError, r"x\[1\] has 4, x\[0\] has 5"),
        (lambda: explain_sharded(_ig, {"a": _x()}, mesh=MESH), TypeError, "x must be an array"),
        (lambda: explain_sharded(_lime, _x(), mesh=MESH, key=0), TypeError, "key"),
        (lambda: explain_sharded(_lime, _x(), mesh=MESH, key=jax.random.split(jax.random.key(0), 4)), ValueError, "key"),
        (lambda: explain_sharded(lambda z: z.sum(), _x(), mesh=MESH), ValueError, "one row per input row"),
    ],
    ids=["method_fn", "mesh", "axis-name", "no-axes", "repeated-axis", "0-d", "empty", "empty-tuple",
         "rows-differ", "dict", "key-type", "key-batch-length", "output-rows"],
)  # fmt: skip
def test_bad_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_lime_and_kernel_shap_take_one_key_per_row():
    x, key = _x(), jax.random.key(0)
    background = jax.random.normal(jax.random.key(4), (3, 4))
    keys = jax.random.split(key, 5)
    legacy = jax.random.split(jax.random.PRNGKey(0), 5)  # uint32 [5, 2]
    one = lime(key, _model, x, num_samples=64, target=1)
    for row_keys in (keys, legacy):
        for a, b in zip(lime(row_keys, _model, x, num_samples=64, target=1), one, strict=True):
            np.testing.assert_array_equal(a, b)
    shap = kernel_shap(key, _model, x, background, num_samples=16, target=0)
    for row_keys in (keys, legacy):
        np.testing.assert_array_equal(
            kernel_shap(row_keys, _model, x, background, num_samples=16, target=0), shap
        )


@pytest.mark.parametrize(
    "bad",
    [
        jax.random.split(jax.random.key(0), 4),
        jax.random.split(jax.random.key(0), (5, 1)),
        np.zeros((5, 3), np.uint32),
        np.zeros((4, 2), np.uint32),
    ],
    ids=["4-keys", "2-D-key-array", "uint32-[5,3]", "uint32-[4,2]"],
)
def test_key_batches_of_the_wrong_shape_are_rejected(bad):
    background = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match="key"):
        lime(bad, _model, _x(), num_samples=64, target=1)
    with pytest.raises(ValueError, match="key"):
        kernel_shap(bad, _model, _x(), background, num_samples=16, target=0)


# --------------------------------------------------------------------------------------------
# 4 host devices, one process


@pytest.mark.parametrize("method", [*BITWISE, "lime", "kernel_shap", "kernel_shap_stderr"])
def test_sharded_equals_single_device(single, method):
    cases = {k: v for k, v in single["cases"].items() if k.startswith(f"{method}/")}
    assert {k.split("/", 1)[1] for k in cases} >= {"n=8/1d", "n=8/2x2", "n=6/1d", "n=6/2x2"}
    for name, case in cases.items():
        whole = case["whole"]
        assert whole["shapes"] and whole["no_nan"], name
        if method in BITWISE:
            assert whole["bitwise"], (name, whole)
        else:
            assert whole["max_abs_diff"] <= ROUND_OFF, (name, whole)


def test_each_device_computes_what_one_device_computes_on_its_rows(single):
    # lime's rows on a device: the same bits as lime on one device for those rows and keys
    blocks = [v["blocks"] for v in single["cases"].values() if "blocks" in v]
    assert len(blocks) == 1
    assert all(b["bitwise"] for b in blocks), blocks


def test_batch_split_over_some_mesh_axes(single):
    case = single["cases"]["lime/n=6/2x2[a]"]
    assert case["spec"] == "P('a',)"
    assert case["whole"]["max_abs_diff"] <= ROUND_OFF


def test_even_batches_stay_sharded_along_rows(single):
    assert single["device_count"] == 4
    assert single["cases"]["integrated_gradients/n=8/1d"]["spec"] == "P('data',)"
    assert single["cases"]["lime/n=8/2x2"]["spec"] == "P(('a', 'b'),)"


def test_second_call_does_not_recompile(single):
    recompile = single["recompile"]
    assert recompile["traces"] == 1
    assert recompile["compiles_on_second_call"] == []
    assert recompile["kwargs_array_changes_result"]  # array kwargs are inputs, not constants


# --------------------------------------------------------------------------------------------
# two processes with 2 host devices each, one global 4-device mesh (jax.distributed, gloo)


def test_two_processes_equal_one(reports):
    runs = [reports["multi0"], reports["multi1"]]
    for run in runs:
        if "unavailable" in run:
            pytest.skip(f"jax.distributed over loopback is unavailable here: {run['unavailable']}")
    for i, run in enumerate(runs):
        assert "failed" not in run, f"process {i}: {run.get('failed')}"
        assert (run["process_count"], run["device_count"], run["local_device_count"]) == (2, 4, 2)
        assert set(run["cases"]) == {
            "integrated_gradients/n=8", "integrated_gradients/n=6", "lime/n=6"
        }  # fmt: skip
        for name, case in run["cases"].items():
            assert case["whole"]["shapes"] and case["whole"]["no_nan"], name
            assert case["blocks"]["bitwise"], (i, name, case)
            if name.startswith("integrated_gradients"):
                assert case["whole"]["bitwise"], (i, name, case)
            else:
                assert case["whole"]["max_abs_diff"] <= ROUND_OFF, (i, name, case)
        # a global array: each process holds the rows of its own devices
        assert run["cases"]["lime/n=6"]["global_shape"] == [6, 6]  # coef
        assert not run["cases"]["integrated_gradients/n=8"]["fully_addressable"]

"""Throughput of `explain_sharded` against the number of (host) devices: 1, 2 and 4.

    python -m benchmarks.bench_sharding [--quick] [--out DIR]

JAX fixes its devices at start-up, so each device count runs in its own subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` and a 1-D mesh over all N devices:

* `integrated_gradients` of an MLP 784-512-512-10 (softmax), batch 256, 50 Gauss-Legendre
  steps, per-row targets (the model's parameters go in as replicated array kwargs);
* `lime` of the MLP 20-64-64-2 of `bench_lime.py`, 100 instances, 5000 samples each, target 1,
  lime's Gaussian sampling around the training mean (one key per row).

The plain single-device call (`integrated_gradients(f, x, ...)`, `lime(key, f, x, ...)`,
eager, no `explain_sharded`) is timed in the 1-device process for reference. Each timing is the
median of repeats after warm-up, with `block_until_ready` (`benchmarks._timing`); the device
counts run twice, alternating, and each case keeps the run with the lower median.

Writes `sharding.json` and `sharding.png` (throughput vs devices, one line per method) to
`benchmarks/results/scale/` (not to `benchmarks/results/`: the runner's ratio chart reads every
JSON file there).

What the machine allows: forced host devices are not more cores. On a 2-core machine XLA:CPU
already spreads one device's large matrix products over both cores (intra-op threads), so
splitting the batch over 2 or 4 host devices cannot go past ~2x of the 1-device time, and
gains only where one device leaves a core idle (small or sequential operations, dispatch).
Real gains need more cores, accelerators, or hosts (`jax.distributed`).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

DEVICE_COUNTS = (1, 2, 4)
PASSES = 2
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale"
ROOT = Path(__file__).resolve().parents[1]

IG_SIZES = (784, 512, 512, 10)
LIME_SIZES = (20, 64, 64, 2)
FULL = {"ig_batch": 256, "ig_steps": 50, "lime_instances": 100, "lime_samples": 5000,
        "warmup": 2, "repeats": 7}  # fmt: skip
QUICK = {"ig_batch": 32, "ig_steps": 10, "lime_instances": 16, "lime_samples": 500,
         "warmup": 1, "repeats": 3}  # fmt: skip


def _child(devices: int, config: dict) -> dict:
    """Runs in a subprocess with `devices` host devices: times every case, returns rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    from benchmarks import _mlp
    from benchmarks._timing import time_interleaved
    from xai_jax import integrated_gradients, lime
    from xai_jax.sharding import explain_sharded

    assert jax.device_count() == devices, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    rows = []

    def time(fns: dict) -> dict:
        timed = {name: fn for name, fn in fns.items() if fn is not None}
        return time_interleaved(timed, repeats=config["repeats"], warmup=config["warmup"])

    # integrated gradients: parameters as array kwargs (replicated inputs, not constants)
    ig_params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in _mlp.init_params(0, IG_SIZES)]
    x = rng.standard_normal((config["ig_batch"], IG_SIZES[0])).astype(np.float32)
    target = rng.integers(0, IG_SIZES[-1], config["ig_batch"])
    steps = config["ig_steps"]

    def ig_rows(z, t, params):
        return integrated_gradients(
            lambda v: _mlp.softmax(params, v), z, target=t, method="gausslegendre", n_steps=steps
        )

    ig_model = lambda v: _mlp.softmax(ig_params, v)  # one object: the plain call's cache key

    def ig_plain():
        return integrated_gradients(ig_model, x, target=target, method="gausslegendre",
                                    n_steps=steps)  # fmt: skip

    timings = time({
        "sharded": lambda: explain_sharded(ig_rows, (x, target), mesh=mesh, params=ig_params),
        "plain": ig_plain if devices == 1 else None,
    })  # fmt: skip
    for name, timing in timings.items():
        rows.append(_row("integrated_gradients", name, devices, config["ig_batch"], timing))

    # LIME: one key per row, split from one key, as the plain call does
    lime_params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in _mlp.init_params(0, LIME_SIZES)]
    train = (rng.standard_normal((1000, LIME_SIZES[0])) * rng.uniform(0.5, 2, LIME_SIZES[0])
             + rng.standard_normal(LIME_SIZES[0])).astype(np.float32)  # fmt: skip
    X = train[: config["lime_instances"]]
    mean, scale = train.mean(axis=0), train.std(axis=0)
    samples, key = config["lime_samples"], jax.random.key(0)

    def lime_rows(k, z, params, mean, scale):
        return lime(k, lambda v: _mlp.softmax(params, v), z, num_samples=samples, mean=mean,
                    scale=scale, target=1)  # fmt: skip

    lime_model = lambda v: _mlp.softmax(lime_params, v)

    def lime_plain():
        return lime(key, lime_model, X, num_samples=samples, mean=mean, scale=scale, target=1)

    timings = time({
        "sharded": lambda: explain_sharded(lime_rows, X, mesh=mesh, key=key, params=lime_params,
                                           mean=mean, scale=scale),
        "plain": lime_plain if devices == 1 else None,
    })  # fmt: skip
    for name, timing in timings.items():
        rows.append(_row("lime", name, devices, config["lime_instances"], timing))
    return {"devices": devices, "rows": rows}


def _row(method: str, mode: str, devices: int, examples: int, timing) -> dict:
    return {
        "method": method,
        "mode": mode,
        "devices": devices,
        "examples": examples,
        "median_s": timing.median,
        "min_s": timing.min,
        "repeats": timing.repeats,
        "examples_per_s": examples / timing.median,
    }


def host_devices_env(devices: int) -> dict:
    """This process's environment with XLA:CPU forced to `devices` host devices."""
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _chart(rows: list[dict], path: Path, machine: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    throughput, speedup = fig.subplots(1, 2)
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        color = f"C{i}"
        sharded = sorted((r for r in rows if r["method"] == method and r["mode"] == "sharded"),
                         key=lambda r: r["devices"])  # fmt: skip
        devices = [r["devices"] for r in sharded]
        rate = [r["examples_per_s"] for r in sharded]
        throughput.plot(devices, rate, "o-", color=color, label=f"{method}, explain_sharded")
        speedup.plot(devices, [v / rate[0] for v in rate], "o-", color=color, label=method)
        for r in rows:
            if r["method"] == method and r["mode"] == "plain":
                throughput.axhline(r["examples_per_s"], color=color, ls="--", lw=1,
                                   label=f"{method}, plain call (1 device)")  # fmt: skip
    throughput.set(xlabel="host devices", ylabel="examples / s", yscale="log",
                   xticks=DEVICE_COUNTS, title="Throughput")  # fmt: skip
    throughput.legend(fontsize=7, loc="best")
    cores = machine.get("cores_usable") or machine.get("cores")
    speedup.plot(DEVICE_COUNTS, DEVICE_COUNTS, ":", color="gray", label="linear")
    if cores:
        speedup.axhline(cores, color="gray", ls="--", lw=1, label=f"{cores} cores")
    speedup.set(xlabel="host devices", ylabel="speed-up vs 1 device", xticks=DEVICE_COUNTS,
                title="Speed-up of explain_sharded")  # fmt: skip
    speedup.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sharding",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # device count, internal
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL

    if args.child is not None:
        args.child_out.write_text(json.dumps(_child(args.child, config)))
        return 0

    from benchmarks.run import machine_description

    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None  # a shared machine's load
    # passes alternate the device counts, so a burst of load from other users of a shared
    # machine hits one pass; each case keeps the pass with the lower median
    best: dict = {}
    for p in range(PASSES):
        for devices in DEVICE_COUNTS:
            print(f"== pass {p + 1}/{PASSES}, {devices} host device(s)", flush=True)
            child_out = args.out / f".sharding_{devices}.json"
            cmd = [sys.executable, "-m", "benchmarks.bench_sharding", "--child", str(devices),
                   "--child-out", str(child_out), *(["--quick"] if args.quick else [])]  # fmt: skip
            subprocess.run(cmd, cwd=ROOT, env=host_devices_env(devices), check=True)
            for row in json.loads(child_out.read_text())["rows"]:
                print(f"   {row['method']:22s} {row['mode']:8s} median {row['median_s']:7.3f} s "
                      f"min {row['min_s']:7.3f} s {row['examples_per_s']:8.1f} examples/s",
                      flush=True)  # fmt: skip
                case = (row["method"], row["mode"], devices)
                if case not in best or row["median_s"] < best[case]["median_s"]:
                    best[case] = {**row, "pass": p + 1}
            child_out.unlink()
    rows = list(best.values())
    for row in rows:
        one = best[(row["method"], "sharded", 1)]
        row["speedup_vs_1_device"] = one["median_s"] / row["median_s"]

    machine = machine_description()
    report = {
        "benchmark": "sharding",
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_at_start": load,
        "config": config,
        "cases": {
            "integrated_gradients": f"MLP {'-'.join(map(str, IG_SIZES))} softmax, batch "
            f"{config['ig_batch']}, gausslegendre n_steps={config['ig_steps']}, per-row targets",
            "lime": f"MLP {'-'.join(map(str, LIME_SIZES))} softmax, {config['lime_instances']} "
            f"instances, num_samples={config['lime_samples']}, mean/scale of the training data, "
            "target 1",
        },
        "notes": [
            "sharded: explain_sharded over a 1-D mesh of N forced host devices "
            "(XLA_FLAGS=--xla_force_host_platform_device_count=N, one process per N); "
            "plain: the method called eagerly without explain_sharded, 1-device process.",
            f"Median of {config['repeats']} timed calls after {config['warmup']} warm-up calls; "
            f"{PASSES} alternating passes over the device counts, the lower median kept.",
            "Host devices share the machine's cores: XLA:CPU already uses all cores inside one "
            "device's matrix products, so the speed-up is bounded by the core count.",
        ],
        "results": rows,
    }
    (args.out / "sharding.json").write_text(json.dumps(report, indent=2) + "\n")
    _chart(rows, args.out / "sharding.png", machine)
    print(f"wrote {args.out / 'sharding.json'} and {args.out / 'sharding.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

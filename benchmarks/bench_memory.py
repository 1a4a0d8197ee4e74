"""Peak memory on large inputs (issue 8): integrated gradients on 10,000 examples of 784
features, LIME on 1,000 instances of 5,000 samples and feature ablation on 10,000 images (issue
19), each case in a fresh process.

    python -m benchmarks.bench_memory [--quick] [--kinds ig lime ablation] [--out DIR]

Every case runs in its own subprocess, so `ru_maxrss` (the peak resident set, KiB on Linux) is
that case's alone. The child imports everything, warms up on a tiny input (XLA runtime and
thread pools up), reads its RSS (the baseline), builds the input, calls the method twice
eagerly on all examples at once as a user would (the first call compiles, the second is timed)
and reports its peak RSS. Growth = peak - baseline; it includes the input and output arrays,
which no chunking can avoid ("in+out"), and what the allocator keeps.

* `integrated_gradients` on the MLP 784-512-512-10 of `_mlp`, Gauss-Legendre, random targets,
  zero baselines: with the default `internal_batch_size=None` (all `n * n_steps` path points
  in one model call), with an explicit `internal_batch_size` (called eagerly with more
  examples than that, the library runs them in blocks of at most that many), and with the
  examples split by the caller into such blocks (one call each), for comparison.
* `lime` on bench_lime's MLP 20-64-64-2 (softmax, label 1), Gaussian sampling around the
  training mean, 5,000 samples, default chunking (~32k model rows per compiled chunk).
* `feature_ablation` on the IG MLP with 4x4 patches of the 28x28 image as features (49 groups:
  50 model rows per example), with the default `batch_size` (~2M input elements, 2,674 rows,
  per call) and `batch_size=512`.

"unchunked need": the path points (`n * n_steps * 784 * 4` bytes) or LIME's samples
(`n * num_samples * 20 * 4` bytes, drawn twice: scaled and raw) that one model call on
everything would hold, and XLA's temporary buffers for that one call
(`jax.jit(...).lower(...).compile().memory_analysis()`, compiled, not run).

Some cases run again with `MALLOC_MMAP_THRESHOLD_=1048576`, which makes glibc give freed
buffers back to the OS: their growth is the working set, without what the allocator keeps.

Writes `memory.json` and `MEMORY.md` (`--quick`: `memory_quick.json`, `MEMORY_quick.md`) to
`benchmarks/results/scale/` (not `results/`: the ratio chart reads every JSON there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "scale"
FEATURES = 784
IG_SIZES = (784, 512, 512, 10)
LIME_SIZES = (20, 64, 64, 2)  # bench_lime's model and data (not imported: it imports lime, shap)
CLASSES = IG_SIZES[-1]
TARGET = 1
METHOD = "gausslegendre"
MB = 1e6  # decimal megabytes, as the "1.57 GB"
KIB = 1024 / MB
MMAP = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def cases(quick: bool) -> list[dict]:
    """The measurements: `kind` is `ig` or `lime`; `ibs` the internal_batch_size."""
    big, small, ibs = (1000, 100, 512) if quick else (10_000, 1000, 2048)
    steps = 200 if quick else 400
    lime_small, lime_big = (10, 100) if quick else (100, 1000)
    ig = [
        {"kind": "ig", "variant": "default", "n": small, "n_steps": 50, "ibs": None},
        {"kind": "ig", "variant": "default", "n": small, "n_steps": steps, "ibs": None},
        {"kind": "ig", "variant": "default", "n": big, "n_steps": 50, "ibs": None},
        {"kind": "ig", "variant": "ibs", "n": small, "n_steps": 50, "ibs": ibs},
        {"kind": "ig", "variant": "ibs", "n": small, "n_steps": steps, "ibs": ibs},
        {"kind": "ig", "variant": "ibs", "n": big, "n_steps": 50, "ibs": ibs},
        {"kind": "ig", "variant": "blocks", "n": big, "n_steps": 50, "ibs": ibs},
    ]
    lime = [
        {"kind": "lime", "variant": "default", "n": lime_small, "num_samples": 5000},
        {"kind": "lime", "variant": "default", "n": lime_big, "num_samples": 5000},
    ]
    # again with every buffer of 1 MiB or more mmap-ed (returned to the OS when freed): the
    # difference is what glibc's heap keeps after XLA frees it, not the working set
    ablation = [
        {"kind": "ablation", "variant": "default", "n": small, "batch_size": None},
        {"kind": "ablation", "variant": "default", "n": big, "batch_size": None},
        {"kind": "ablation", "variant": "batch_size", "n": big, "batch_size": 512},
    ]
    control = [] if quick else [dict(c, env=MMAP) for c in (ig[3], ig[4], ig[6], *lime)]
    return ig + lime + ablation + control


# ---- the child: one measurement ---------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _ig_in_blocks(ig, fn, x, t, *, n_steps: int, ibs: int):
    """IG of blocks of at most `ibs` examples (spread evenly), one call each, concatenated."""
    import jax.numpy as jnp

    n = x.shape[0]
    block = -(-n // -(-n // ibs))
    parts = [
        ig(
            fn,
            x[i : i + block],
            target=t[i : i + block],
            method=METHOD,
            n_steps=n_steps,
            internal_batch_size=ibs,
        )
        for i in range(0, n, block)
    ]
    return jnp.concatenate(parts)


# Rows the model is traced with: IG's gradient calls (not the shape probe on all of `x`), every
# LIME call (the largest is the chunk). Measured, so it shows what the library does.
_ROWS: list[int] = []
_GRADIENT_TRACERS = ("JVPTracer", "LinearizeTracer")


def _counting(fn, gradient_only: bool):
    def counted(x):
        if not gradient_only or type(x).__name__ in _GRADIENT_TRACERS:
            _ROWS.append(x.shape[0])
        return fn(x)

    return counted


def _ig_setup(case: dict):
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import _mlp
    from xai_jax import integrated_gradients

    _, params = _mlp.numpy_and_jax(0, IG_SIZES)
    fn = _counting(lambda x: _mlp.logits(params, x), gradient_only=True)
    n_steps, ibs = case["n_steps"], case["ibs"]
    if case["variant"] == "blocks":
        call = lambda x, t: _ig_in_blocks(integrated_gradients, fn, x, t, n_steps=n_steps, ibs=ibs)
    else:
        call = lambda x, t: integrated_gradients(
            fn, x, target=t, method=METHOD, n_steps=n_steps, internal_batch_size=ibs
        )

    def inputs(n: int):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.random((n, FEATURES), dtype=np.float32))
        return x, jnp.asarray(rng.integers(0, CLASSES, n), jnp.int32)

    return call, inputs, FEATURES * 4 * 2  # in + out bytes per example


def _lime_setup(case: dict):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import _mlp
    from xai_jax import lime

    _, params = _mlp.numpy_and_jax(0, LIME_SIZES)
    fn = _counting(lambda x: _mlp.softmax(params, x), gradient_only=False)
    d = LIME_SIZES[0]
    rng = np.random.default_rng(1)
    train = (
        rng.standard_normal((1000, d)) * rng.uniform(0.5, 2, d) + rng.standard_normal(d)
    ).astype(np.float32)
    mean, scale = train.mean(axis=0), train.std(axis=0)  # lime's StandardScaler
    num_samples = case["num_samples"]

    def call(x, _):
        return lime(
            jax.random.key(0), fn, x, num_samples=num_samples, mean=mean, scale=scale, target=TARGET
        )

    def inputs(n: int):
        rows = np.resize(train, (n, d))  # the training rows, repeated past 1,000
        return jnp.asarray(rows), None

    # in: x; out: coef [n, d] + intercept, score, local_pred
    return call, inputs, (d + d + 3) * 4


PATCH = 4  # feature ablation's groups: PATCH x PATCH squares of the 28 x 28 image


def _patch_mask():
    import numpy as np

    side = int(FEATURES**0.5)
    ids = np.arange(side) // PATCH
    return (ids[:, None] * -(-side // PATCH) + ids[None]).reshape(FEATURES)


def _ablation_setup(case: dict):
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import _mlp
    from xai_jax import feature_ablation

    _, params = _mlp.numpy_and_jax(0, IG_SIZES)
    fn = _counting(lambda x: _mlp.logits(params, x), gradient_only=False)
    mask = _patch_mask()

    def call(x, t):
        return feature_ablation(fn, x, target=t, feature_mask=mask, batch_size=case["batch_size"])

    def inputs(n: int):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.random((n, FEATURES), dtype=np.float32))
        return x, jnp.asarray(rng.integers(0, CLASSES, n), jnp.int32)

    return call, inputs, FEATURES * 4 * 2


_SETUPS = {"ig": _ig_setup, "lime": _lime_setup, "ablation": _ablation_setup}


def child(case: dict) -> dict:
    import gc

    import jax

    call, inputs, io_per_example = _SETUPS[case["kind"]](case)
    jax.block_until_ready(call(*inputs(2)))  # warm-up: runtime, thread pools, small compiles
    gc.collect()
    baseline, baseline_peak = _rss_kib(), _peak_kib()
    x, t = inputs(case["n"])
    _ROWS.clear()
    times, peaks = [], []
    for _ in range(2):  # the first call compiles, the second is timed
        start = time.perf_counter()
        out = jax.block_until_ready(call(x, t))
        times.append(time.perf_counter() - start)
        del out
        peaks.append(_peak_kib())
    return {
        "baseline_mb": baseline * KIB,
        "baseline_peak_mb": baseline_peak * KIB,
        "peak_mb": peaks[-1] * KIB,
        "first_call_peak_mb": peaks[0] * KIB,
        "growth_mb": (peaks[-1] - baseline) * KIB,
        "io_mb": case["n"] * io_per_example / MB,
        "first_call_s": times[0],
        "wall_s": times[1],
        "examples_per_s": case["n"] / times[1],
        "rows_per_call": max(_ROWS, default=None),  # None: every trace came from the cache
    }


# ---- the parent: cases, the unchunked figures, the report -------------------------------


def _unchunked(case: dict) -> dict:
    """What one call on everything would need: the points/samples, and XLA's temp buffers."""
    import jax
    import jax.numpy as jnp

    from benchmarks import _mlp
    from xai_jax import feature_ablation, integrated_gradients, lime

    n = case["n"]
    if case["kind"] == "ig":
        _, params = _mlp.numpy_and_jax(0, IG_SIZES)
        steps = case["n_steps"]

        def whole(x, t):
            return integrated_gradients(
                lambda z: _mlp.logits(params, z), x, target=t, method=METHOD, n_steps=steps
            )

        args = (
            jax.ShapeDtypeStruct((n, FEATURES), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32),
        )
        points = n * steps * FEATURES * 4
    elif case["kind"] == "ablation":
        _, params = _mlp.numpy_and_jax(0, IG_SIZES)
        mask = _patch_mask()
        groups = int(mask.max()) + 1

        def whole(x, t):
            return feature_ablation(
                lambda z: _mlp.logits(params, z), x, target=t, feature_mask=mask,
                batch_size=n * (groups + 1),
            )  # fmt: skip

        args = (
            jax.ShapeDtypeStruct((n, FEATURES), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32),
        )
        points = n * (groups + 1) * FEATURES * 4
    else:
        _, params = _mlp.numpy_and_jax(0, LIME_SIZES)
        s, d = case["num_samples"], LIME_SIZES[0]

        def whole(x):
            return lime(
                jax.random.key(0),
                lambda z: _mlp.softmax(params, z),
                x,
                num_samples=s,
                mean=jnp.zeros(d),
                scale=jnp.ones(d),
                target=TARGET,
                batch_size=n,
            )

        args = (jax.ShapeDtypeStruct((n, d), jnp.float32),)
        points = 2 * n * s * d * 4
    temp = jax.jit(whole).lower(*args).compile().memory_analysis().temp_size_in_bytes
    return {"unchunked_points_mb": points / MB, "unchunked_xla_temp_mb": temp / MB}


def _name(case: dict) -> str:
    if case["kind"] == "lime":
        name = f"lime n={case['n']:,}, {case['num_samples']:,} samples"
    elif case["kind"] == "ablation":
        size = case["batch_size"]
        rows = "default batch_size" if size is None else f"batch_size={size}"
        name = f"feature ablation n={case['n']:,}, 49 patches, {rows}"
    else:
        ibs = {
            "default": "ibs=None (default)",
            "ibs": f"ibs={case['ibs']}",
            "blocks": f"ibs={case['ibs']}, example blocks",
        }[case["variant"]]
        name = f"IG n={case['n']:,}, {case['n_steps']} steps, {ibs}"
    if case.get("env"):
        name += ", " + " ".join(f"{k}={v}" for k, v in case["env"].items())
    return name


def run_case(case: dict, timeout: float) -> dict:
    env = {**os.environ, **case.get("env", {})}
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--child", json.dumps(case)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{_name(case)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


COLUMNS = [
    ("peak_mb", "peak RSS MB", "{:,.0f}"),
    ("baseline_mb", "baseline MB", "{:,.0f}"),
    ("growth_mb", "growth MB", "{:,.0f}"),
    ("io_mb", "in+out MB", "{:,.2f}"),
    ("growth_over_io", "growth / in+out", "{:,.1f}"),
    ("rows_per_call", "rows per model call", "{:,}"),
    ("unchunked_points_mb", "unchunked points MB", "{:,.0f}"),
    ("unchunked_xla_temp_mb", "unchunked XLA temp MB", "{:,.0f}"),
    ("wall_s", "wall s", "{:.2f}"),
    ("examples_per_s", "examples/s", "{:,.0f}"),
]


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def markdown(report: dict) -> str:
    quick = " (quick run: small sizes)" if report["quick"] else ""
    load = report["loadavg"]
    lines = [
        f"# Peak memory on large inputs{quick}",
        "",
        f"{report['date']}, {report['machine']}; load average (1 min) {load['start']:.1f} at "
        f"the start, {load['end']:.1f} at the end: a shared machine, so wall times are noisy "
        "(memory is not). `python -m benchmarks.bench_memory` writes this file.",
        "",
        *[f"- {note}" for note in report["notes"]],
        "",
        "| case | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for case in report["cases"]:
        row = [case["case"]]
        row += [_cell(case[key], fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    summary = _summary(report["cases"])
    if summary:
        lines += ["", "Read off the table (growth in MB):", "", *[f"- {s}" for s in summary]]
    return "\n".join(lines) + "\n"


def _rows(case: dict) -> str:
    rows = case["rows_per_call"]
    return "?" if rows is None else f"{rows:,}"


def _summary(rows: list[dict]) -> list[str]:
    """The comparisons the benchmark exists for, from whichever cases this run has."""

    def find(kind, variant="default", n_steps=None, big=False, env=False):
        hits = [r for r in rows if r["kind"] == kind and r["variant"] == variant
                and (n_steps is None or r.get("n_steps") == n_steps)
                and bool(r.get("env")) == env]  # fmt: skip
        if not hits:
            return None
        return max(hits, key=lambda r: r["n"]) if big else min(hits, key=lambda r: r["n"])

    def growth(r):
        return f"{r['growth_mb']:,.0f} (n={r['n']:,}, {r.get('n_steps', r.get('num_samples'))})"

    out = []
    steps = max((r.get("n_steps") or 0 for r in rows), default=0)
    a, b, c = find("ig", n_steps=50), find("ig", n_steps=steps), find("ig", n_steps=50, big=True)
    if a and b and c:
        out.append(
            f"IG, default ibs=None: {growth(a)} -> {growth(b)} -> {growth(c)}: grows with "
            "n x n_steps (all path points in one call), a few times the points themselves."
        )
    for env, label in ((False, ""), (True, ", mmap threshold fixed")):
        a, b = find("ig", "ibs", 50, env=env), find("ig", "ibs", steps, env=env)
        big = find("ig", "blocks", 50, big=True, env=env) or find("ig", "ibs", 50, True, env)
        if a and b and b["n_steps"] > a["n_steps"]:
            out.append(
                f"IG, ibs{label}: {growth(a)} vs {growth(b)}: "
                f"{b['n_steps'] / a['n_steps']:.0f}x the steps, "
                f"{b['growth_mb'] / a['growth_mb']:.2f}x the growth."
            )
        unblocked = find("ig", "ibs", 50, big=True, env=env)
        blocked = find("ig", "blocks", 50, big=True, env=env)
        if unblocked and blocked and unblocked["n"] == blocked["n"]:
            out.append(
                f"IG{label} at n={blocked['n']:,}: {unblocked['growth_mb']:,.0f} with ibs "
                f"({_rows(unblocked)} rows per call), {blocked['growth_mb']:,.0f} in example "
                f"blocks of calls ({_rows(blocked)} rows per call)."
            )
        if a and big and big["n"] > a["n"]:
            out.append(
                f"IG, ibs{label}: {growth(a)} -> {big['case']}: {big['growth_mb']:,.0f}, "
                f"{big['growth_mb'] - a['growth_mb']:+,.0f} for {big['io_mb'] - a['io_mb']:+,.0f}"
                " of in+out."
            )
        a, b = find("lime", env=env), find("lime", big=True, env=env)
        if a and b and b["n"] > a["n"]:
            out.append(
                f"LIME{label}: {growth(a)} vs {growth(b)} (unchunked: "
                f"{b['unchunked_xla_temp_mb']:,.0f} of XLA temp at n={b['n']:,}): fixed."
            )
    a, b = find("ablation"), find("ablation", big=True)
    c = find("ablation", "batch_size", big=True)
    if a and b and b["n"] > a["n"]:
        out.append(
            f"feature ablation: {a['growth_mb']:,.0f} (n={a['n']:,}) -> {b['growth_mb']:,.0f} "
            f"(n={b['n']:,}; unchunked: {b['unchunked_points_mb']:,.0f} of perturbed rows), "
            f"{b['growth_mb'] - a['growth_mb']:+,.0f} for {b['io_mb'] - a['io_mb']:+,.0f} of "
            "in+out" + (f"; with batch_size=512 {c['growth_mb']:,.0f}." if c else ".")
        )
    timed = [find("ig", v, 50, big=True) for v in ("default", "ibs", "blocks")]
    if all(timed):
        out.append(
            f"IG at n={timed[0]['n']:,}, wall s: "
            + ", ".join(f"{r['variant']} {r['wall_s']:.2f}" for r in timed)
            + " (same run; noisy)."
        )
    return out


NOTES = [
    "Each case: a fresh process; baseline = RSS after imports and a warm-up call on 2 "
    "examples; growth = peak RSS (ru_maxrss, over a compiling call and a timed call) - "
    "baseline. in+out: the input and output arrays (IG: n x 784 float32 each).",
    "IG: MLP 784-512-512-10, 50 or 400 Gauss-Legendre steps, zero baselines, random targets, "
    "one eager call on all examples. ibs=None is the library default: every path point in one "
    "model call. With ibs, the library's own chunking: at least one step of every example per "
    "call, as Captum, and eagerly at n > ibs the examples in blocks of at most ibs. 'example "
    "blocks': the same split done by the caller (a host loop over calls, one per block), for "
    "comparison. rows per model "
    "call: the largest batch the model was traced with inside the gradient (measured).",
    "LIME: MLP 20-64-64-2, 5,000 Gaussian samples per instance around the training mean, "
    "default chunks of ~32k model rows (6 instances).",
    "feature ablation: MLP 784-512-512-10, 49 feature groups (4x4 patches of the 28x28 "
    "image), random targets, one eager call on all examples; rows per model call: the "
    "largest batch the model was traced with (measured).",
    "unchunked points: the path points (n x steps x 784 x 4 B) or LIME's samples (scaled and "
    "raw, 2 x n x 5,000 x 20 x 4 B) of one call on everything; unchunked XLA temp: XLA's "
    "temporary buffers for that call (compiled, not run). For IG ibs=None this is what runs.",
    "MALLOC_MMAP_THRESHOLD_=1048576: the same case with a fixed mmap threshold, so every "
    "buffer of 1 MiB or more is mmap-ed and given back to the OS when freed. By default glibc "
    "raises its threshold after the first free (up to 32 MiB) and serves later buffers from "
    "its heaps, which keep freed memory; the difference is that allocator retention, not "
    "JAX's working set.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    parser.add_argument("--kinds", nargs="+", choices=sorted(_SETUPS),
                        help="run only these kinds; the other cases are kept from the saved "
                        "results")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    from benchmarks.run import machine_description

    start_load = os.getloadavg()[0]
    results, unchunked = [], {}
    suffix = "_quick" if args.quick else ""  # a smoke run does not overwrite the full results
    saved = args.out / f"memory{suffix}.json"
    kept = []
    if args.kinds and saved.exists():
        kept = [c for c in json.loads(saved.read_text())["cases"] if c["kind"] not in args.kinds]
    for case in cases(args.quick):
        if args.kinds and case["kind"] not in args.kinds:
            continue
        name = _name(case)
        print(f"-- {name}", flush=True)
        measured = run_case(case, timeout=120 if args.quick else 600)
        key = json.dumps(
            {k: v for k, v in case.items() if k in ("kind", "n", "n_steps", "num_samples")}
        )
        if key not in unchunked:
            unchunked[key] = _unchunked(case)
        row = {
            "case": name,
            **case,
            **measured,
            **unchunked[key],
        }
        # meaningful where the arrays are large (IG); LIME's are a few hundred KB
        row["growth_over_io"] = row["growth_mb"] / row["io_mb"] if row["io_mb"] >= 1 else None
        results.append(row)
        print("   " + ", ".join(f"{h} {_cell(row[k], f)}" for k, h, f in COLUMNS), flush=True)
    machine = machine_description()
    report = {
        "benchmark": "memory",
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{machine['cpu']}, {machine['cores_usable']} cores, jax "
        f"{machine['versions']['jax']}",
        "machine_details": machine,
        "loadavg": {"start": start_load, "end": os.getloadavg()[0]},
        "notes": NOTES,
        "cases": kept + results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"memory{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"MEMORY{suffix}.md").write_text(markdown(report))
    print(f"\nwrote {args.out}/memory{suffix}.json and MEMORY{suffix}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

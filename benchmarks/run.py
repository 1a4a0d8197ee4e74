"""Benchmark runner: ours vs the peers in one process; writes JSON per benchmark, RESULTS.md and
a chart of the ratios (ratios.png).

    python benchmarks/run.py [--quick] [--only NAME ...] [--out DIR]

`main(argv)` is the entry point of `python -m xai_jax bench` too. Each benchmark is a function
`bench(ctx) -> dict` registered by name in `BENCHMARKS` and imported only when selected.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import platform
import sys
from pathlib import Path

from xai_jax.plotting import benchmark_chart, load_results

BENCHMARKS = {
    "pairwise_distances": "benchmarks.bench_distances:bench_pairwise_distances",
    "weighted_ridge": "benchmarks.bench_ridge:bench_weighted_ridge",
    "numerical_gradient": "benchmarks.bench_gradients:bench_numerical_gradient",
    "urv_gradient": "benchmarks.bench_gradients:bench_urv_gradient",
    "integrated_gradients": "benchmarks.bench_integrated_gradients:bench_integrated_gradients",
    "layer_conductance": "benchmarks.bench_integrated_gradients:bench_layer_conductance",
    "lime": "benchmarks.bench_lime:bench_lime",
    "kernel_shap": "benchmarks.bench_lime:bench_kernel_shap",
    "cem": "benchmarks.bench_cem:bench_cem",
    "perturbation": "benchmarks.bench_perturbation:bench_perturbation",
    "gradient_attribution": "benchmarks.bench_gradient_attribution:bench_gradient_attribution",
    "front_ends": "benchmarks.bench_front_ends:bench_front_ends",
    "propagation": "benchmarks.bench_propagation:bench_propagation",
    "metrics": "benchmarks.bench_metrics:bench_metrics",
    "shapley_accuracy": "benchmarks.bench_shapley_accuracy:bench_shapley_accuracy",
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET_LABELS = {
    "ratio_median": "{:g}x",
    "matmul_fraction": "{:.0%} of matmul",
    "mse_gain": "{:.2f}x lower MSE",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, smaller shapes")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    args = parser.parse_args(argv)

    from benchmarks._timing import Context  # imports JAX: not needed for --help

    ctx = Context(quick=args.quick, out=args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    for name in dict.fromkeys(args.only or BENCHMARKS):
        module, function = BENCHMARKS[name].split(":")
        print(f"\n== {name}{' (quick)' if args.quick else ''}", flush=True)
        first_warning = len(ctx.warnings)
        result = getattr(importlib.import_module(module), function)(ctx)
        result["columns"] = [_column(*spec) for spec in result["columns"]]
        for case in result["cases"]:
            case["targets_met"] = {k: case[k] >= v for k, v in case["targets"].items()}
        report = {
            "benchmark": name,
            "quick": args.quick,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "matmul_gflops": ctx.matmul,
            "warmup": ctx.warmup,
            **result,
            "warnings": ctx.warnings[first_warning:],
        }
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(render(report), flush=True)
        gc.collect()
    markdown = args.out / "RESULTS.md"
    markdown.write_text(results_markdown(args.out))
    chart = args.out / "ratios.png"
    ax = benchmark_chart(load_results(args.out), title="speed-up over each peer (median)")
    ax.figure.savefig(chart, dpi=100)
    print(f"\nwrote {args.out}/*.json, {markdown} and {chart}")
    return 0


def machine_description() -> dict:
    import jax
    import jaxlib
    import numpy
    import sklearn

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "jax_backend": jax.default_backend(),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "numpy": numpy.__version__,
            "sklearn": sklearn.__version__,
        },
    }


def render(report: dict) -> str:
    """One benchmark's markdown table (and notes, warnings) from its JSON report."""
    quick = " (quick run: few repeats, smaller shapes, noisy)" if report["quick"] else ""
    matmul = report["matmul_gflops"]
    lines = [f"## {report['benchmark']}{quick}", "", f"{report['date']}. "]
    if matmul:
        lines[-1] += (
            f"f32 2048^3 matmul in this run: {matmul['median']:.0f} GFLOP/s "
            f"(range {matmul['min']:.0f}-{matmul['max']:.0f} over the cases it was timed with). "
        )
    lines[-1] += "ratio = peer / ours (medians; 'of mins': minimums)."
    lines += ["", f"- peer: {report['peer']}", f"- ours: {report['ours']}"]
    lines += [f"- {note}" for note in report.get("notes", [])]
    columns = report["columns"]
    header = ["case", "peer ms (med / min)", "ours ms (med / min)", "ratio", "of mins"]
    header += [column["header"] for column in columns] + ["target"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in report["cases"]:
        row = [
            case["case"],
            f"{_ms(case['peer_median_s'])} / {_ms(case['peer_min_s'])}",
            f"{_ms(case['ours_median_s'])} / {_ms(case['ours_min_s'])}",
            f"{case['ratio_median']:.2f}x",
            f"{case['ratio_min']:.2f}x",
        ]
        for column in columns:
            value = case.get(column["key"])
            row.append("" if value is None else column["format"].format(value * column["scale"]))
        row.append(
            ", ".join(
                f">={TARGET_LABELS[k].format(v)} {'ok' if case['targets_met'][k] else 'MISSED'}"
                for k, v in case["targets"].items()
            )
        )
        lines.append("| " + " | ".join(row) + " |")
    lines += [f"\n**WARNING:** {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def results_markdown(folder: Path) -> str:
    """RESULTS.md: the tables of every benchmark with a JSON report in `folder`."""
    reports = [
        json.loads((folder / f"{name}.json").read_text())
        for name in BENCHMARKS
        if (folder / f"{name}.json").exists()
    ]
    lines = ["# Benchmark results", ""]
    if reports:
        m = reports[-1]["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        lines += [
            f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
            f"{m['platform']}, Python {m['python']}, JAX backend {m['jax_backend']}; {versions}.",
            "Peer and ours are timed alternately in one process after warm-up; times are per call.",
            "",
        ]
    return "\n".join([*lines, *(render(report) for report in reports)])


def _column(key: str, header: str, fmt: str, scale: float = 1.0) -> dict:
    """An extra table column: the case field `key`, shown as `fmt.format(value * scale)`."""
    return {"key": key, "header": header, "format": fmt, "scale": scale}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


if __name__ == "__main__":
    # Run as a script: make the `benchmarks` package (and an uninstalled `xai_jax`) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

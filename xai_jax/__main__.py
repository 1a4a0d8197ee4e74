"""Command line: `python -m xai_jax demo` and `python -m xai_jax bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xai_jax")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="every method on a haiku classifier of digits")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--digits", type=int, default=4, help="how many test digits to explain")
    demo.add_argument("--out", default="demo_output", help="directory for figures and report")
    demo.add_argument("--quick", action="store_true", help="fewer steps and samples (tests)")
    commands.add_parser(
        "bench", help="benchmark suite (needs the bench extra); options as benchmarks/run.py"
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        from xai_jax._demo import main as demo_main

        demo_main(seed=args.seed, num_digits=args.digits, out=args.out, quick=args.quick)
        return 0
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "run.py").exists():
        parser.error("the benchmarks live in the source checkout: run from a clone of xai_jax")
    sys.path.insert(0, str(root))
    from benchmarks.run import main as bench_main

    return bench_main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())

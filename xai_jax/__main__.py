"""Command line: `python -m xai_jax demo` and `python -m xai_jax bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# test digits the demo can explain: a quarter of scikit-learn's 1797 digits (`_demo`'s split,
# checked in tests/test_demo.py); a constant so that parsing loads neither sklearn nor haiku
TEST_DIGITS = 450


def _digits(text: str) -> int:
    """`--digits`: an int in 1..TEST_DIGITS (0 or -1 would explain nothing or slice from the
    end)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= TEST_DIGITS:
        raise argparse.ArgumentTypeError(
            f"must be in 1..{TEST_DIGITS} (the number of test digits), got {value}"
        )
    return value


def _out_dir(text: str) -> str:
    """`--out`: a directory, existing or to be made; refused before the run when it, or the
    nearest existing path above it, is not a directory (the report would fail after it)."""
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is" if existing == path else f"is under {str(existing)!r}, which is"
        raise argparse.ArgumentTypeError(
            f"{text!r} {what} a file, not a directory: pass a directory for the report"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xai_jax")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="every method on a haiku classifier of digits")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--digits", type=_digits, default=4,
        help=f"how many test digits to explain (1..{TEST_DIGITS})",
    )  # fmt: skip
    demo.add_argument(
        "--out", type=_out_dir, default="demo_output", help="directory for figures and report"
    )
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

"""Command line: `python -m mtkit demo`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the multi-stage demo on the embedded data")
    demo.add_argument("--seeds", type=int, default=3, help="number of seeds to average (default 3)")
    demo.add_argument("--epochs", type=int, default=60, help="pretraining epochs (default 60)")
    demo.add_argument("--out", default="results/demo", help="folder for results and figures")
    args = parser.parse_args(argv)

    from mtkit.demo import run_demo
    from mtkit.utils import MtkitError

    try:
        run_demo(seeds=args.seeds, epochs=args.epochs, out_dir=args.out)
    except MtkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

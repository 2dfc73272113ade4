"""Command line: `python -m mtkit demo` and `python -m mtkit run CONFIG.toml`."""

from __future__ import annotations

import argparse
import sys

INTERRUPTED = 130  # the shell's exit status for a process ended by SIGINT (128 + 2)

RUN_DESCRIPTION = """\
Run a pipeline described by a TOML file: a few top-level fields and one [section] per part.
Every field is optional; absent fields take the defaults below. Example: mtkit/configs/.

Each run writes runs/<time>-<name>/ (config.json and config.toml, split.json,
environment.json, metrics.jsonl, checkpoints/<stage>.pt, summary.json) and prints how each
stage ended. Ctrl-C stops a run (exit status 130). A run that was stopped (Ctrl-C, killed,
crashed) is finished, exactly as if it had not been, with
  python -m mtkit run --resume runs/<time>-<name>
On several processes:
  torchrun --standalone --nproc_per_node=2 -m mtkit run CONFIG.toml
(only rank 0 writes the folder; batch_size is per process).
"""


def build_parser() -> argparse.ArgumentParser:
    from mtkit.pipeline.config import describe_config

    parser = argparse.ArgumentParser(
        prog="python -m mtkit",
        description="mtkit from the command line: the demo, or any pipeline from a config file.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on digits and tweets, over seeds: one table, and plots",
        description="Pretrain, fine-tune and adapt on the embedded digits and tweets over "
        "several seeds; print one table and save results.json and figures.",
    )
    demo.add_argument("--seeds", type=int, default=3, help="seeds per dataset (default 3)")
    demo.add_argument(
        "--datasets",
        nargs="+",
        default=["digits", "tweets"],
        metavar="NAME",
        help="digits and/or tweets (default both)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="tiny settings: a smoke test, not a result"
    )
    demo.add_argument("--out", default="results/demo", help="folder for results and figures")

    run = commands.add_parser(
        "run",
        help="run a pipeline from a TOML config file",
        description=RUN_DESCRIPTION,
        epilog="The fields, with their defaults:\n\n" + describe_config(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "config", nargs="?", help="the TOML file, e.g. mtkit/configs/digits_pipeline.toml"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish the stopped run in this run folder instead (no CONFIG then)",
    )
    run.add_argument("--runs-dir", default="runs", help="where run folders go (default runs/)")
    run.add_argument("--progress", action="store_true", help="show progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and (args.config is None) == (args.resume is None):
        parser.error("run needs a CONFIG file, or --resume RUN_DIR (not both)")

    from mtkit.core import distributed
    from mtkit.core.utils import MtkitError

    try:
        from mtkit.core.files import check_folder

        # A bad folder name is an error before any work, not after the first stage.
        check_folder(
            *(("--out", args.out) if args.command == "demo" else ("--runs-dir", args.runs_dir))
        )
        if args.command == "demo":
            from mtkit.demo import run_demo

            run_demo(args.seeds, args.datasets, quick_settings=args.quick, out_dir=args.out)
        else:
            from mtkit.pipeline import resume, run_config

            distributed.setup()  # joins the process group under torchrun; else does nothing
            try:
                if args.resume is not None:
                    run = resume(args.resume, progress=args.progress)
                else:
                    run = run_config(args.config, runs_dir=args.runs_dir, progress=args.progress)
            finally:
                distributed.cleanup()
            if run.path is not None:  # rank 0 only
                print(run.table())
                print(f"\nrun folder: {run.path}")
    except MtkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C: the run stops, its folder can resume
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

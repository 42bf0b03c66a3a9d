"""The `cnnbench` command and the error handling shared by every entry point."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from cnnbench.errors import CnnbenchError


def stage_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run an entry point: expected errors become one message and exit 2, never a traceback."""
    try:
        code = main(argv)
    except CnnbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `cnnbench summary ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        sys.exit(0)
    sys.exit(code or 0)


# ------------------------------------------------------------------ subcommands


def _summary(args: argparse.Namespace) -> int:
    from cnnbench.config import load_params
    from cnnbench.models import build_model
    from cnnbench.summary import format_summary, summarize, summary_to_json

    params = load_params(args.params)
    spec = params.model(args.model)
    model = build_model(spec, num_classes=args.num_classes, image_size=args.image_size)
    summary = summarize(model, image_size=args.image_size)
    print(summary_to_json(summary) if args.json else format_summary(summary, title=args.model))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cnnbench.evaluate import format_predictions, predict_files

    results = predict_files(args.run_or_checkpoint, args.images, runs_dir=args.runs_dir,
                            device=args.device, top_k=args.top_k)
    print(format_predictions(results))
    return 1 if any(r.error for r in results) else 0


def _check_metrics(args: argparse.Namespace) -> int:
    from cnnbench.check import check_metrics
    from cnnbench.config import load_params

    params = load_params(args.params)
    ok, table = check_metrics(params.check, runs_dir=args.runs_dir, baseline_path=args.baseline)
    print(table)
    return 0 if ok else 1


def _update_baseline(args: argparse.Namespace) -> int:
    from cnnbench.check import update_baseline
    from cnnbench.config import load_params

    params = load_params(args.params)
    path = update_baseline(params.check, runs_dir=args.runs_dir, baseline_path=args.baseline)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnbench", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="layer-by-layer table of a model: shapes, params, FLOPs")
    p.add_argument("model", help="a model name from params.yaml")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print JSON (keys: params, flops, layers)")
    p.set_defaults(func=_summary)

    p = sub.add_parser("predict", help="top-k classes for image files, from a run or a checkpoint")
    p.add_argument("run_or_checkpoint", help="a run name from params.yaml, a run directory or a .pt file")
    p.add_argument("images", nargs="+", help="image files of any size and mode")
    p.add_argument("--runs-dir", default="data/runs", help="where run directories live (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=_predict)

    for name, func, help_ in (
        ("check-metrics", _check_metrics, "fail (exit 1) when a gated metric dropped below the baseline"),
        ("update-baseline", _update_baseline, "write the current metrics as the new baseline"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--runs-dir", default=None,
                       help="metrics directory of the gated suite (default: reports/runs/<check.suite>)")
        p.add_argument("--baseline", default="reports/baseline.json", help="(default: %(default)s)")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `cnnbench` console script."""
    def run(argv: Sequence[str] | None) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    stage_main(run, argv)


if __name__ == "__main__":
    main()

"""The `cnnbench` command and the error handling shared by every entry point."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence

from cnnbench import __version__
from cnnbench.core.entry_point import stage_main
from cnnbench.core.errors import CnnbenchError
from cnnbench.params.limits import MAX_BATCH, MAX_CLASSES, MAX_IMAGE_SIZE

# ------------------------------------------------------------------ subcommands


# `cnnbench summary` describes one thing: a params.yaml model, an ad-hoc spec, or a single layer;
# `cnnbench cost` measures one model or several side by side, named the same ways.
SPEC_SOURCES = {"model": "MODEL", "spec": "--spec", "spec_file": "--spec-file"}
SUMMARY_SOURCES = {**SPEC_SOURCES, "layer": "--layer"}
MODEL_FLAGS = {"num_classes": "--num-classes", "image_size": "--image-size", "batch_size": "--batch-size"}
LAYER_FLAGS = {"in_shape": "--in", "kernel": "--kernel", "stride": "--stride", "padding": "--padding",
               "out_channels": "--out-channels", "no_bias": "--no-bias"}


def _summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cnnbench.models import summary
    from cnnbench.models.weights import check_weights_name

    _check_summary_flags(args, parser)
    if args.layer is not None:
        shape = summary.parse_shape(args.in_shape, "--in")
        result = summary.summarize_layer(args.layer, shape, args.kernel, args.stride, args.padding,
                                         args.out_channels, bias=not args.no_bias)
        print(summary.summary_to_json(result) if args.json else summary.format_layer_summary(result))
        return 0
    (spec,) = _model_specs(args)
    check_weights_name(spec.torchvision_weights, f"models.{spec.name}.torchvision_weights")
    result = summary.summarize_spec(spec, args.num_classes, args.image_size, args.batch_size)
    print(summary.summary_to_json(result) if args.json else summary.format_summary(result, title=spec.name))
    return 0


def _model_specs(args: argparse.Namespace) -> list:
    """The model specs that MODEL (from params.yaml; `cost` takes several), --spec or --spec-file give."""
    from cnnbench.models import summary

    if args.spec is not None:
        return [summary.parse_spec(args.spec, name="spec", where="--spec")]
    if args.spec_file is not None:
        return [summary.read_spec(args.spec_file)]
    from cnnbench.params.config import load_params

    params = load_params(args.params)
    return [params.model(name) for name in (args.model if isinstance(args.model, list) else [args.model])]


def _cost(args: argparse.Namespace) -> int:
    from cnnbench.core.device import resolve_device
    from cnnbench.evaluation.latency import Precision, format_cost, format_ratios, measure_inference
    from cnnbench.models.build import build_model

    given = [flag for dest, flag in SPEC_SOURCES.items() if getattr(args, dest) not in (None, [])]
    if len(given) != 1:
        raise CnnbenchError(f"cost: give one of {', '.join(SPEC_SOURCES.values())}"
                            + (f", not {' and '.join(given)}" if given else ""))
    twice = sorted({name for name in args.model if args.model.count(name) > 1})
    if twice:
        raise CnnbenchError(f"cost: {', '.join(twice)} given more than once")
    specs = _model_specs(args)
    device = resolve_device(args.device)
    models = [build_model(spec, num_classes=args.num_classes, image_size=args.image_size).eval() for spec in specs]
    if args.runtime != ["eager"]:
        return _cost_runtimes(args, {spec.name: model for spec, model in zip(specs, models)})
    costs = measure_inference(models, args.image_size, cpu_batch=args.batch_size,
                              gpu=device if device.type == "cuda" else None, gpu_batch=args.batch_size,
                              precision=Precision(amp=args.amp, channels_last=args.channels_last),
                              threads=args.threads, latency=_latency_repeats(args.repeats))
    named = {spec.name: cost for spec, cost in zip(specs, costs)}
    if args.json:
        print(json.dumps({name: cost.to_dict() for name, cost in named.items()}, indent=2))
        return 0
    print("\n\n".join([format_cost(cost, title=name) for name, cost in named.items()]
                      + ([format_ratios(named)] if len(named) > 1 else [])))
    return 0


def _cost_runtimes(args: argparse.Namespace, models: dict) -> int:
    """`cost --runtime ...`: batch-1 latency per runtime (eager, ONNX Runtime fp32 and int8), side by side."""
    import json

    from cnnbench.core.device import available_cpus
    from cnnbench.evaluation.deploy import compare_runtimes, format_runtimes

    threads = sorted({1, args.threads or available_cpus()})
    result = compare_runtimes(models, args.image_size, list(dict.fromkeys(args.runtime)), threads,
                              _latency_repeats(args.repeats))
    print(json.dumps(result, indent=2) if args.json else format_runtimes(result))
    return 0


def _latency_repeats(calls: int | None):
    """evaluate's batch-1 repeats, or exactly `calls` timed calls per thread count."""
    from cnnbench.evaluation.latency import LATENCY

    if calls is None:
        return LATENCY
    return dataclasses.replace(LATENCY, calls=calls, min_calls=calls)


def _check_summary_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """One thing to summarise, and only the options that describe it."""
    given = [flag for dest, flag in SUMMARY_SOURCES.items() if getattr(args, dest) is not None]
    if len(given) != 1:
        raise CnnbenchError(f"summary: give one of {', '.join(SUMMARY_SOURCES.values())}"
                            + (f", not {' and '.join(given)}" if given else ""))
    if args.layer is None:
        misplaced = [flag for dest, flag in LAYER_FLAGS.items() if getattr(args, dest) != parser.get_default(dest)]
        if misplaced:
            raise CnnbenchError(f"summary: {', '.join(misplaced)}: only with --layer")
        return
    misplaced = [flag for dest, flag in MODEL_FLAGS.items() if getattr(args, dest) != parser.get_default(dest)]
    if misplaced:
        raise CnnbenchError(f"summary: {', '.join(misplaced)}: only for models; a layer's input is --in N,C,H,W")
    if args.in_shape is None or args.kernel is None:
        raise CnnbenchError("summary: --layer needs --in N,C,H,W and --kernel F")


def _predict(args: argparse.Namespace) -> int:
    from cnnbench.evaluation.predict import format_predictions, predict_files

    results = predict_files(args.run_or_checkpoint, args.images, runs_dir=args.runs_dir,
                            device=args.device, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"path": r.path, "error": r.error or None,
                           "top": [{"class": name, "probability": round(prob, 6)} for name, prob in r.top]}
                          for r in results], indent=2))
    else:
        print(format_predictions(results))
    return 1 if any(r.error for r in results) else 0


def _check_metrics(args: argparse.Namespace) -> int:
    from cnnbench.evaluation.gate import check_metrics
    from cnnbench.params.config import load_params

    params = load_params(args.params)
    ok, table = check_metrics(params.check, runs_dir=_suite_runs_dir(args, params), baseline_path=args.baseline)
    print(table)
    return 0 if ok else 1


def _update_baseline(args: argparse.Namespace) -> int:
    from cnnbench.evaluation.gate import update_baseline
    from cnnbench.params.config import load_params

    params = load_params(args.params)
    path = update_baseline(params.check, runs_dir=_suite_runs_dir(args, params), baseline_path=args.baseline)
    print(f"wrote {path}")
    return 0


def _suite_runs_dir(args: argparse.Namespace, params=None) -> str:
    """--runs-dir, else reports/runs/<suite>: --suite's where the command has one, else check.suite's (the offline
    suite's, the one the gate checks)."""
    if args.runs_dir:
        return args.runs_dir
    if params is None:
        from cnnbench.params.config import load_params

        params = load_params(args.params)
    suite = getattr(args, "suite", None) or params.check.suite
    params.suite(suite)  # an unknown suite is named with the ones there are
    return f"reports/runs/{suite}"


def _results(args: argparse.Namespace) -> int:
    from cnnbench.report.results import format_results, suite_results
    from cnnbench.report.runs import load_runs

    runs_dir = _suite_runs_dir(args)
    data = load_runs(runs_dir)
    if not len(data.runs):
        raise CnnbenchError(f"results: {runs_dir} holds no run yet; run the suite first (`dvc repro report@<suite>`)")
    results = suite_results(data)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def _compare(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from cnnbench.report.revisions import compare_revision, format_comparison, git

    runs_dir = Path(_suite_runs_dir(args))
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel").strip())
    with tempfile.TemporaryDirectory() as scratch:
        table, baseline = compare_revision(repo, runs_dir, args.baseline, Path(scratch))
    if args.json:
        rows = table.drop(columns=["a", "b"], errors="ignore").astype(object).where(table.notna(), None)
        print(json.dumps({"baseline": args.baseline, "commit": baseline.commit, "runs": rows.to_dict("records")},
                         indent=2, default=str))
    else:
        print(format_comparison(table, baseline))
    return 0


def _plots(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnbench.params.config import load_params
    from cnnbench.report.plots_page import write_page

    params = load_params(args.params)
    suites = [params.suite(name) for name in args.suite] if args.suite else list(params.suites.values())
    reported = [s for s in suites if (Path(s.dir) / "plots").is_dir()]
    if not reported:
        names = ", ".join(s.name for s in suites)
        raise CnnbenchError(f"plots: no suite is reported yet ({names}); run `make offline` or "
                            "`dvc repro report@<suite>` first")
    page = write_page([f"{s.dir}/plots" for s in reported], Path(args.out), args.vega_packages)
    absent = [s.name for s in suites if s not in reported]
    if absent:
        print(f"not plotted, not reported yet: {', '.join(absent)}")
    print(f"{page} ({', '.join(s.name for s in reported)}; opens with no network)")
    return 0


def _int_in(low: int, high: int, why: str):
    """An argparse type: an integer in low..high (`why`: the reason for the upper bound, shown when exceeded)."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high} ({why}), not {value}")
        return value
    return parse


def _threads(text: str) -> int:
    """--threads: an integer up to the CPUs this process may use (device.available_cpus, read only when
    the flag is given: the parser itself stays free of torch)."""
    from cnnbench.core.device import available_cpus

    return _int_in(1, available_cpus(), "the CPUs this process may use")(text)


def _existing_dir(text: str):
    from pathlib import Path

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return Path(text)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2, like every other expected error."""

    def error(self, message: str) -> None:
        raise CnnbenchError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_model_source(parser: argparse.ArgumentParser, model_help: str, several: bool = False):
    """MODEL (or several), --spec and --spec-file; returns their group, for more ways to name what to describe."""
    parser.add_argument("model", nargs="*" if several else "?", help=model_help)
    g = parser.add_argument_group("instead of a params.yaml model")
    g.add_argument("--spec", metavar="YAML", help="a model spec as a YAML or JSON mapping, the same fields as "
                   "an entry under params.yaml's models: (default: none)")
    g.add_argument("--spec-file", metavar="PATH",
                   help="a YAML or JSON file holding one such mapping (default: none)")
    return g


def _add_model_shape(parser: argparse.ArgumentParser):
    """--num-classes and --image-size: the network built from the spec; returns their group."""
    g = parser.add_argument_group("model options (MODEL, --spec, --spec-file)")
    g.add_argument("--num-classes", type=_int_in(1, MAX_CLASSES, "as a checkpoint may hold"), default=10, metavar="K",
                   help="classes of the head (default: %(default)s)")
    g.add_argument("--image-size", type=_int_in(4, MAX_IMAGE_SIZE, "as params.yaml allows"), default=32, metavar="PX",
                   help="side of the square input in pixels (default: %(default)s)")
    return g


def _add_suite_choice(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--suite", default=None, help="a suite of params.yaml (default: check.suite, the offline one)")
    g.add_argument("--runs-dir", default=None, help="a suite's runs folder (default: reports/runs/<suite>)")


def _add_summary_command(sub) -> None:
    """summary: a model's layers, or one layer's output size."""
    p = sub.add_parser(
        "summary", help="layer-by-layer table of a model or of one layer: shapes, params, FLOPs",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  cnnbench summary resnet18_stem3 --image-size 32 --batch-size 8
  cnnbench summary --spec '{family: resnet, stem: {kernel: 3, widths: [64], strides: [1], pool: false},
                           block: basic, depths: [2, 2], widths: [64, 128], strides: [1, 2]}'
  cnnbench summary --spec-file my_resnet.yaml --num-classes 100
  cnnbench summary --layer conv --in 8,3,32,32 --out-channels 6 --kernel 3 --stride 2 --padding 1
  cnnbench summary --layer maxpool --in 1,64,112,112 --kernel 3 --stride 2 --padding 1""")
    g = _add_model_source(p, "a model name from params.yaml (or --spec, --spec-file, --layer)")
    g.add_argument("--layer", metavar="KIND", help="one layer alone: conv, maxpool or avgpool, described by the "
                   "layer options below (default: none)")
    g = _add_model_shape(p)
    g.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="images per batch, the N of the [N, C, H, W] shapes; FLOPs are given per image "
                   "and per batch (default: %(default)s)")
    g = p.add_argument_group("layer options (--layer)")
    g.add_argument("--in", dest="in_shape", metavar="N,C,H,W", help="input shape, e.g. 8,3,32,32 (required)")
    g.add_argument("--kernel", type=int, metavar="F", help="kernel size f, square (required)")
    g.add_argument("--stride", type=int, metavar="S", help="stride s (default: as torch, 1 for conv, the "
                   "kernel for pooling)")
    g.add_argument("--padding", type=int, default=0, metavar="P",
                   help="zeros added on each side (default: %(default)s)")
    g.add_argument("--out-channels", type=int, metavar="C", help="output channels (required for conv)")
    g.add_argument("--no-bias", action="store_true", help="a conv without bias (default: with bias, as nn.Conv2d)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table (default: table)")
    p.set_defaults(func=lambda args, p=p: _summary(args, p))


def _add_cost_command(sub) -> None:
    """cost: models measured side by side, before training."""
    p = sub.add_parser(
        "cost", help="inference cost of models before training them: batch-1 CPU latency, throughput, size",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""Random weights, random images: the
timings of this machine under its current load. Several models are measured side by side, their
batch-1 calls interleaved, so their ratios hold even when the machine is busy.
examples:
  cnnbench cost resnet18 mobilenet_v2 --image-size 32       # and how they compare
  cnnbench cost resnet18 --image-size 224 --num-classes 100 --json
  cnnbench cost --spec '{family: resnet, stem: {kernel: 3, widths: [64], strides: [1], pool: false},
                        block: basic, depths: [2, 2], widths: [64, 128], strides: [1, 2]}'""")
    _add_model_source(p, "model names from params.yaml, measured side by side (or --spec, --spec-file)",
                      several=True)
    g = _add_model_shape(p)
    g.add_argument("--batch-size", type=_int_in(1, MAX_BATCH, "as params.yaml allows"), default=32, metavar="N",
                   help="batch of the throughput measurement, on the CPU and the GPU (default: %(default)s)")
    g = p.add_argument_group("measurement")
    g.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="the 'all threads' count of the CPU figures (default: every CPU this process may use)")
    g.add_argument("--repeats", type=_int_in(1, 10_000, "10,000 calls resolve a median to well under 1 %"),
                   default=None, metavar="N",
                   help="timed batch-1 calls per thread count (default: as evaluate measures, up to 60, "
                   "fewer when a busy machine makes them take over 1.5 s, never under 3)")
    g.add_argument("--runtime", nargs="+", choices=("eager", "onnxruntime", "onnxruntime-int8"), default=["eager"],
                   help="where batch-1 latency is measured: PyTorch eager, or the model exported to ONNX and run in "
                   "ONNX Runtime, fp32 or int8 (the deploy extra); several are measured side by side with each "
                   "model's ratio to the first (default: eager, with throughput too)")
    g.add_argument("--device", default="auto", help="auto or cuda: the CPU, and the GPU when there is one; "
                   "cpu: the CPU only (default: %(default)s)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="GPU only: bf16 autocast, as params.yaml's train.amp (default: %(default)s)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="GPU only: channels_last memory format, as train.channels_last (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")
    p.set_defaults(func=_cost)


def _add_result_commands(sub) -> None:
    """predict, results and compare: what trained runs say."""
    p = sub.add_parser("predict", help="top-k classes for image files, from a run or a checkpoint")
    p.add_argument("run_or_checkpoint", help="a run name from params.yaml, a run directory or a .pt file")
    p.add_argument("images", nargs="+", help="image files of any size and mode")
    p.add_argument("--runs-dir", default="data/runs", help="where run directories live (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--top-k", type=_int_in(1, MAX_CLASSES, "as a checkpoint may hold"), default=5,
                   help="classes listed per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON: per image its path, top classes with their "
                   "probabilities, and its error or null (default: text)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("results", help="the suite's runs and their verdicts in the terminal (120 columns)")
    _add_suite_choice(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")
    p.set_defaults(func=_results)

    p = sub.add_parser(
        "compare", help="did my change help? each run now against the same run at a git revision or DVC experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  cnnbench compare                          # the working tree (after dvc repro or dvc exp run) against HEAD
  cnnbench compare --baseline main~3 --suite study
  cnnbench compare --baseline my-exp        # a DVC experiment's name (dvc exp show lists them)""")
    p.add_argument("--baseline", default="HEAD",
                   help="a git revision or a DVC experiment's name to compare against (default: %(default)s)")
    _add_suite_choice(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")
    p.set_defaults(func=_compare)


def _add_report_and_gate_commands(sub) -> None:
    """plots, and the CI gate's check-metrics and update-baseline."""
    p = sub.add_parser(
        "plots", help="every reported suite's training curves as one HTML page that needs no network",
        description="`dvc plots show` with Vega, Vega-Lite and vega-embed inline (from their npm packages, "
                    "fetched once with npm into ~/.cache/cnnbench/vega) instead of loaded from a CDN.")
    p.add_argument("--suite", action="append", default=None,
                   help="a suite of params.yaml; repeat for several (default: every suite that has a report)")
    p.add_argument("--out", default="dvc_plots", help="folder of the page, index.html (default: %(default)s)")
    p.add_argument("--vega-packages", type=_existing_dir, default=None,
                   help="a folder with the npm tarballs (vega-5.33.1.tgz, vega-lite-5.23.0.tgz, "
                        "vega-embed-6.29.0.tgz) for a machine without npm (default: fetch them with npm)")
    p.set_defaults(func=_plots)

    for name, func, help_ in (
        ("check-metrics", _check_metrics, "fail (exit 1) when a gated metric dropped below the baseline"),
        ("update-baseline", _update_baseline, "write the current metrics as the new baseline"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--runs-dir", default=None,
                       help="metrics directory of the gated suite (default: reports/runs/<check.suite>)")
        p.add_argument("--baseline", default="reports/baseline.json",
                       help="the baseline metrics file (default: %(default)s)")
        p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnbench", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--version", action="version", version=f"cnnbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_summary_command(sub)
    _add_cost_command(sub)
    _add_result_commands(sub)
    _add_report_and_gate_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `cnnbench` console script."""
    def run(argv: Sequence[str] | None) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    stage_main(run, argv)


if __name__ == "__main__":
    main()

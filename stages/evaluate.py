"""DVC stage `evaluate@<run>`: each seed's best-validation checkpoint on the untouched test split."""

import argparse
import sys
from pathlib import Path

# Run the code of the tree DVC runs this stage in (a queued experiment's copy, say),
# not whatever copy of cnnbench happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.evaluation.latency import Precision
from cnnbench.evaluation.predict import evaluate_replicates
from cnnbench.params.config import load_params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a name under `runs:` in params.yaml")
    parser.add_argument("data_dir", help="the prepared dataset, e.g. data/prepared/cifar10")
    parser.add_argument("run_dir", help="the run's checkpoints, one seed<k>/ per seed, e.g. data/runs/cifar10-resnet18")
    parser.add_argument("out_dir", help="metrics, per-class table and predictions go to OUT_DIR/seed<k>/")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    run = params.run(args.run)
    # The GPU's inference throughput is measured in the precision the run trains with.
    precision = Precision(amp=run.train.amp, channels_last=run.train.channels_last)
    tta = params.dataset(run.dataset).tta  # flip TTA is the dataset's choice: a mirrored digit is another digit
    for seed, metrics in evaluate_replicates(run, args.data_dir, args.run_dir, args.out_dir, params.evaluate,
                                             args.device, precision, tta=tta).items():
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(f"evaluate {args.run} seed {seed}: {shown}")
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

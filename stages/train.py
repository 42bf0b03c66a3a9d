"""DVC stage `train@<run>`: train one run of params.yaml's `runs:` table.

One model per seed of the run: checkpoints go to RUN_DIR/seed<k>/ (kept between invocations, so
a killed run resumes and a seed already trained is kept), DVCLive logs and the summary metrics to
LIVE_DIR/seed<k>/. Several processes: params.yaml's `launch:` (this script then reruns itself under
torchrun); on the other machines of a multi-node run, the same command with `--node-rank K`.
"""

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

# Run the code of the tree DVC runs this stage in (a queued experiment's copy, say),
# not whatever copy of cnnbench happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.core.files import exclusive_lock
from cnnbench.params.config import load_params
from cnnbench.training.launch import is_torchrun_child, relaunch_under_torchrun


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a name under `runs:` in params.yaml")
    parser.add_argument("data_dir", help="the prepared dataset, e.g. data/prepared/cifar10")
    parser.add_argument("run_dir", help="checkpoints, one seed<k>/ per seed, e.g. data/runs/cifar10-resnet18")
    parser.add_argument("live_dir", help="DVCLive logs and summary, one seed<k>/ per seed, "
                                         "e.g. reports/runs/study/cifar10-resnet18/train")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's rank when launch.nnodes > 1")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    run = params.run(args.run)
    # One trainer per run directory: the process DVC starts on node 0 (the one that writes) holds the lock; its
    # torchrun ranks work under it, and other nodes write nothing there.
    writer = not is_torchrun_child() and args.node_rank == 0
    with exclusive_lock(args.run_dir, "trainer") if writer else nullcontext():
        code = relaunch_under_torchrun(params.launch, __file__, sys.argv[1:] if argv is None else argv,
                                       args.node_rank)
        if code is not None:
            return code
        from cnnbench.training.loop import (
            train_replicates,  # here: a process that only launches torchrun needs no torch
        )

        train_replicates(run, params.model(run.model), args.data_dir, args.run_dir, args.live_dir, device=args.device)
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

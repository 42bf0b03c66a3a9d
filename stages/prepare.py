"""DVC stage `prepare@<dataset>`: clean, resize and split a fetched source into arrays.

Writes the arrays to OUT_DIR, the data report (every dropped file with its reason) to REPORT,
a contact sheet of sample images per class and a sheet of cross-split near-duplicates beside the report.
"""

import argparse
import sys
from pathlib import Path

# Run the code of the tree DVC runs this stage in (a queued experiment's copy, say),
# not whatever copy of cnnbench happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.data.arrays import write_prepared
from cnnbench.data.prepare import prepare_dataset, write_data_report
from cnnbench.data.samples import save_sample_sheet
from cnnbench.data.sheets import save_near_duplicate_sheet
from cnnbench.params.config import load_params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a name under `datasets:` in params.yaml")
    parser.add_argument("raw_dir", help="the fetched source, e.g. data/raw/cifar10")
    parser.add_argument("out_dir", help="where the arrays go, e.g. data/prepared/cifar10")
    parser.add_argument("report", help="the data report JSON, e.g. reports/data/cifar10.json")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    prepared = prepare_dataset(params.dataset(args.dataset), args.raw_dir, workers=args.workers)
    write_prepared(prepared, args.out_dir)
    write_data_report(prepared.report, args.report)
    sheet = save_sample_sheet(prepared, Path(args.report).with_name(f"{args.dataset}_samples.png"),
                              set(params.report.highlight_classes), params.report.highlight_label)
    save_near_duplicate_sheet(prepared.near_pairs, Path(args.report).with_name(f"{args.dataset}_near_duplicates.png"))
    near = prepared.report.get("near_duplicates", {})
    counts = ", ".join(f"{s} {len(prepared.y[s])}" for s in prepared.y)
    print(f"prepared {args.dataset}: {len(prepared.classes)} classes, {counts}; "
          f"{len(prepared.report['dropped'])} files dropped (see {args.report}), "
          f"{near.get('removed', 0)} of them near-duplicates of held-out images; samples in {sheet}")
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

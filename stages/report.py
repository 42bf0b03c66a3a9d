"""DVC stage `report@<suite>`: the suite's runs as a README with tables and figures.

Reads the suite's run outputs in RUNS_DIR, links the data reports and sample sheets found in
DATA_REPORTS_DIR, and writes OUT_DIR/README.md, figures/ and metrics.json.
"""

import argparse
import sys
from pathlib import Path

# Run the code of the tree DVC runs this stage in (a queued experiment's copy, say),
# not whatever copy of cnnbench happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.params.config import load_params
from cnnbench.report import render_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", help="a name under `suites:` in params.yaml")
    parser.add_argument("runs_dir", help="the suite's train and eval outputs, e.g. reports/runs/offline")
    parser.add_argument("data_reports_dir", help="the prepare stage's data reports, e.g. reports/data")
    parser.add_argument("out_dir", help="where the README goes: the suite's `dir`, e.g. reports")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    suite = params.suite(args.suite)
    readme = render_report(args.runs_dir, args.out_dir, params.report, suite.name, params.datasets,
                           args.data_reports_dir, params.suite_claims(suite.name))
    print(f"report {suite.name}: wrote {readme}")
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

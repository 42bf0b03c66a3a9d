"""DVC stage `report@<suite>`: the suite's runs as a README with tables and figures.

Reads reports/runs/<SUITE>/ and writes <suites.SUITE.dir>/README.md, figures/ and metrics.json.
"""

import argparse
from pathlib import Path

from cnnbench.cli import stage_main
from cnnbench.config import load_params
from cnnbench.report import render_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", help="a name under `suites:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    suite = params.suite(args.suite)
    readme = render_report(Path("reports/runs") / suite.name, suite.dir, params.report, suite.name,
                           params.datasets)
    print(f"report {suite.name}: wrote {readme}")
    return 0


if __name__ == "__main__":
    stage_main(main)

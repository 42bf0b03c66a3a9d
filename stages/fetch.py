"""DVC stage `fetch@<source>`: download or copy one raw source into data/raw/<source>/."""

import argparse
import sys
from pathlib import Path

# Run the code of the tree DVC runs this stage in (a queued experiment's copy, say),
# not whatever copy of cnnbench happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.data.fetch import fetch_source
from cnnbench.params.config import load_params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="a name under `sources:` or `local_sources:` in params.yaml")
    parser.add_argument("out_dir", help="directory to (re)create, e.g. data/raw/cifar10")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    source = load_params(args.params).source(args.source)
    path = fetch_source(source, args.out_dir)
    print(f"fetched {source.uri} -> {path}")
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

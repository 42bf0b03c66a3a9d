"""DVC stage `audit@<dataset>`: label quality of a prepared dataset, by confident learning.

Writes the audit JSON (per-class label quality and rank, the images most likely mislabelled, the
classes most confused) and, beside it, the sheet of suspicious labels and the class-ranking chart.
"""

import argparse
import sys
from pathlib import Path

# Run the code of the tree DVC runs this stage in, not whatever copy of cnnbench is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.entry_point import stage_main
from cnnbench.core.files import read_json_object, write_json_atomic
from cnnbench.data.arrays import load_prepared
from cnnbench.data.audit import audit_dataset
from cnnbench.data.sheets import save_class_ranking, save_suspicious_sheet
from cnnbench.params.config import load_params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a name under `datasets:` in params.yaml")
    parser.add_argument("prepared_dir", help="the prepared dataset, e.g. data/prepared/digits")
    parser.add_argument("data_report", help="prepare's data report, e.g. reports/data/digits.json")
    parser.add_argument("report", help="the audit JSON, e.g. reports/data/digits_audit.json")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    params.dataset(args.dataset)
    result = audit_dataset(args.dataset, load_prepared(args.prepared_dir), params.audit,
                           params.report.highlight_classes, params.report.highlight_label,
                           read_json_object(Path(args.data_report)))
    report, out = result.report, Path(args.report)
    write_json_atomic(out, report)
    save_suspicious_sheet(result.suspicious_pixels, report["label_issues"]["listed"][: len(result.suspicious_pixels)],
                          out.with_name(f"{args.dataset}_suspicious_labels.png"))
    save_class_ranking(report["class_ranking"], set(params.report.highlight_classes), params.report.highlight_label,
                       out.with_name(f"{args.dataset}_class_ranking.png"))
    print(f"audit {args.dataset}: {report['label_issues']['count']} suspected label errors of {report['images']} "
          f"images ({report['features']['kind']} features, {result.seconds:.1f} s); see {out}")
    return 0


if __name__ == "__main__":
    stage_main(main, die_with_parent=True)  # a `dvc repro` killed takes this stage with it

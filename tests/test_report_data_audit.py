"""The report's data-audit section: rendered from the audit JSON where one exists, absent otherwise."""

from __future__ import annotations

import json

from PIL import Image

from cnnbench.report import render_report
from cnnbench.report.data_audit import audit_section
from report_fixtures import CLAIMS, DATASETS, REPORT_CFG, links, make_suite, section

AUDIT = {
    "images": 1000, "classes": 3,
    "cleaning": {"dropped_by_reason": {"duplicate": 2, "near-duplicate": 3}, "near_duplicate_pairs": 5,
                 "cross_split_pairs": 3, "train_copies_removed": 3, "label_conflicts": 1,
                 "near_duplicate_max_distance": 8},
    "features": {"kind": "pixels", "dims": 88, "requested": "auto"},
    "probe": {"folds": 5, "out_of_sample_accuracy": 0.91},
    "label_issues": {"count": 12, "share": 0.012, "listed": []},
    "class_ranking": [{"class": "moth", "rank": 1, "label_quality": 0.61},
                      {"class": "crow", "rank": 2, "label_quality": 0.8}],
    "highlight": {"classes": {"moth": 1},
                  "sentence": "The 1 classes marked 'noisy' rank #1 of 3 by measured label quality (#1 = noisiest)."},
    "confused_pairs": [{"classes": ["moth", "crow"], "overlapping_images": 7, "joint_probability": 0.01}],
}


def test_the_section_says_what_was_found_and_done_and_links_the_sheets(tmp_path):
    data = tmp_path / "reports" / "data"
    data.mkdir(parents=True)
    (data / "bugs_audit.json").write_text(json.dumps(AUDIT))
    (data / "bugs_class_ranking.png").write_bytes(b"png")
    text = "\n".join(audit_section("bugs", data, tmp_path / "reports"))
    assert "### Data audit of bugs" in text
    assert "prepare dropped 2 duplicate, 3 near-duplicate" in text
    assert "5 pairs, 3 across splits, 3 train copies removed, 1 label conflicts" in text
    # ... and what that search cannot see, so that few pairs are not read as no leak
    assert "The near-duplicate search is pHash alone" in text and "misses most crops and rotations" in text
    assert "12 of 1,000 images (1.2%)" in text and "rank #1 of 3" in text
    assert "moth / crow (7 images)" in text
    assert "![Classes ranked by label quality](data/bugs_class_ranking.png)" in text
    assert "suspicious_labels" not in text  # a sheet that is not there is not linked


def test_no_audit_no_section(tmp_path):
    assert audit_section("bugs", tmp_path, tmp_path) == []


def test_the_suite_report_shows_the_audit_in_the_dataset_section(tmp_path):
    runs = make_suite(tmp_path / "reports" / "runs" / "demo")
    data = tmp_path / "reports" / "data"
    data.mkdir()
    (data / "digits_audit.json").write_text(json.dumps(AUDIT))
    for sheet in ("class_ranking", "suspicious_labels", "near_duplicates"):
        Image.new("RGB", (10, 10)).save(data / f"digits_{sheet}.png")
    out = tmp_path / "reports" / "demo"
    readme = render_report(runs, out, REPORT_CFG, "demo", DATASETS, data, CLAIMS).read_text()
    digits = section(readme, "digits")
    assert "### Data audit of digits" in digits and "rank #1 of 3" in digits
    assert "Data audit of butterflies" not in readme  # never audited: no section
    for target in links(readme):
        if not target.startswith("http"):
            assert (out / target).resolve().exists(), target

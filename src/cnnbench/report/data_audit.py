"""The data-audit part of a dataset's section: what prepare cleaned and what the audit measured.

Reads `<dataset>_audit.json` (written by the audit stage, with prepare's cleaning counts) and links
the sheets drawn beside it; renders nothing when the dataset was never audited.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnbench.core.files import read_json_object
from cnnbench.report.tables import md_text

NOISIEST_SHOWN = 5
CONFUSED_SHOWN = 3


def audit_section(dataset: str, data_reports_dir: Path, out_dir: Path) -> list[str]:
    """README lines for `dataset`'s audit, or none when `<dataset>_audit.json` does not exist."""
    audit = read_json_object(data_reports_dir / f"{dataset}_audit.json")
    if audit is None:
        return []
    lines = [f"### Data audit of {dataset}", "", _cleaning_sentence(audit.get("cleaning", {})), ""]
    issues, probe, kind = audit["label_issues"], audit["probe"], audit["features"]["kind"]
    lines += [f"**Label quality.** {issues['count']:,} of {audit['images']:,} images ({issues['share']:.1%}) are "
              f"suspected label errors (cleanlab's confident learning on out-of-sample probabilities of a "
              f"{probe['folds']}-fold logistic-regression probe on {kind} features; the probe's out-of-sample "
              f"accuracy is {probe['out_of_sample_accuracy']:.1%}). Suspects are candidates to look at, not "
              f"proven errors.", ""]
    if probe.get("near_chance"):
        lines += [f"**The probe is near chance** ({probe['out_of_sample_accuracy']:.1%} against "
                  f"{probe['majority_share']:.1%} for always answering the largest class): on these features it "
                  f"cannot tell the classes apart, so its suspects say little about the labels. More images, or "
                  f"`audit.features: imagenet`, give it a chance.", ""]
    if audit["highlight"]["sentence"]:
        lines += [audit["highlight"]["sentence"], ""]
    noisiest = ", ".join(f"{md_text(row['class'])} ({row['label_quality']:.3f})"
                         for row in audit["class_ranking"][:NOISIEST_SHOWN])
    lines += [f"Noisiest classes by label quality (0-1, higher is cleaner): {noisiest}.", ""]
    if audit["confused_pairs"]:
        pairs = "; ".join(f"{md_text(a)} / {md_text(b)} ({p['overlapping_images']} "
                          f"image{'s' if p['overlapping_images'] != 1 else ''})"
                          for p in audit["confused_pairs"][:CONFUSED_SHOWN] for a, b in [p["classes"]])
        lines += [f"Classes most often confused with each other: {pairs}.", ""]
    for caption, suffix in (("Classes ranked by label quality", "class_ranking"),
                            ("Most suspicious labels", "suspicious_labels"),
                            ("Cross-split near-duplicates (held-out left, train right)", "near_duplicates")):
        path = data_reports_dir / f"{dataset}_{suffix}.png"
        if path.is_file():
            rel = relative_link(path, out_dir)
            lines += [f"**{caption}** ([{path.name}]({rel}))", "", f"![{caption}]({rel})", ""]
    json_link = relative_link(data_reports_dir / f"{dataset}_audit.json", out_dir)
    lines += [f"All of it, image by image: [{dataset}_audit.json]({json_link}).", ""]
    return lines


def relative_link(path: Path, start: Path) -> str:
    """`path` as a link from a README in `start`."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


# Said wherever near-duplicates are reported: what the check cannot see (docs/datasets.md has pHash's measured
# recall per transformation), so a clean result is not read as "no leak".
PHASH_ONLY = (" The near-duplicate search is pHash alone: it finds re-encoded, mirrored and rescaled copies, but"
              " misses most crops and rotations (about half of 10 % zoom-crops, 1 in 9 copies rotated 5 degrees:"
              " docs/datasets.md); a search by image embeddings, which would find them, needs a pretrained"
              " encoder's weights, and cnnbench fetches none.")


def _cleaning_sentence(cleaning: dict) -> str:
    """What prepare found and did, in one sentence of counts."""
    dropped = cleaning.get("dropped_by_reason", {})
    parts = [f"{n:,} {reason}" for reason, n in sorted(dropped.items())] or ["nothing"]
    text = f"**Cleaning.** prepare dropped {', '.join(parts)}."
    if cleaning.get("near_duplicate_max_distance") is not None:
        text += (f" Near-duplicates (pHash within {cleaning['near_duplicate_max_distance']} bits): "
                 f"{cleaning['near_duplicate_pairs']:,} pairs, {cleaning['cross_split_pairs']:,} across splits, "
                 f"{cleaning['train_copies_removed']:,} train copies removed, "
                 f"{cleaning['label_conflicts']:,} label conflicts.")
    else:
        text += " No near-duplicate pair was found."
    text += PHASH_ONLY
    viewer = cleaning.get("decoded_as_viewer", {})
    counts = [viewer.get(key, 0) for key in ("rotated_by_exif", "composited_on_background", "rescaled_to_8_bits")]
    if any(counts):  # absent or all zero for array sources (digits, CIFAR-10)
        background = "RGB ({})".format(", ".join(map(str, viewer.get("background_rgb", []))))
        text += (f" Decoded as a viewer shows them: {counts[0]:,} turned upright by its EXIF orientation, "
                 f"{counts[1]:,} with transparency composited on {background}, {counts[2]:,} with 16-bit or "
                 f"float samples rescaled to 8 bits.")
    return text

"""The documentation holds together: README.md is a short front page whose Quickstart CI and reviewers run,
and every relative link in it and in docs/*.md reaches a file, and every #anchor a heading of its target.

Anchors are GitHub's heading slugs: the heading's text (markup and link targets dropped), lowercased, every
character but letters, digits, spaces, '-' and '_' removed, spaces turned into '-'; a repeated slug gets -1,
-2, ... in order. Stdlib only, no network: absolute URLs (https:, mailto:) are not followed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 150
QUICKSTART_COMMANDS = ["make offline", "make test"]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), the target up to whitespace or ')', an optional "title" after it.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")  # [label]: target
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked out."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = text.lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the prose of a markdown file."""
    out = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        out += [(number, m.group(1)) for m in LINK.finditer(line)]
        if ref := REFERENCE.match(line):
            out.append((number, ref.group(1)))
    return out


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one markdown file: a missing target, or an anchor its target lacks."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue  # https:, mailto: ...: not this repository's
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
            continue
        if anchor:
            if resolved.suffix != ".md" or not resolved.is_file():
                problems.append(f"{where}: an anchor into something that is not a markdown file")
            elif anchor not in anchors(resolved):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {resolved.relative_to(ROOT)}")
    return problems


def section(text: str, title: str) -> str:
    """The body of the `## <title>` section, up to the next heading of level 1 or 2 outside code."""
    lines, body, inside, fenced = text.splitlines(), [], False, False
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
        if not fenced and re.match(r"^#{1,2}\s", line):
            if inside:
                break
            inside = line.strip() == f"## {title}"
            continue
        if inside:
            body.append(line)
    return "\n".join(body)


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every ```bash block in `text`."""
    return [block.splitlines() for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)]


# ------------------------------------------------------------------ the rules themselves


def test_the_pages_exist():
    assert README.is_file()
    assert len(PAGES) > 1, "docs/ holds no page"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)
              if not SCHEME.match(target)}
    unlinked = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README's table of contents does not link: {unlinked}"


def test_the_readme_is_a_short_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines: the rest belongs in docs/"


def test_the_quickstart_runs_make_offline_and_make_test():
    """CI (.ci/run) and reviewers run these two commands from the README, exactly as written there."""
    quickstart = section(README.read_text(encoding="utf-8"), "Quickstart")
    assert quickstart, "README.md has no `## Quickstart` section"
    blocks = bash_blocks(quickstart)
    assert blocks, "the Quickstart has no ```bash block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0]]
    assert [c for c in commands if c] == QUICKSTART_COMMANDS, blocks[0]


# ------------------------------------------------------------------ the checker, on pages made to fail


@pytest.mark.parametrize(("heading", "anchor"), [
    ("## What runs", "what-runs"),
    ("### As deployed: ONNX Runtime, fp32 and int8", "as-deployed-onnx-runtime-fp32-and-int8"),
    ("## Sharing data and models (DVC remote)", "sharing-data-and-models-dvc-remote"),
    ("## What cnnbench trusts, and what it does not", "what-cnnbench-trusts-and-what-it-does-not"),
    ("## The `cnnbench cost` command", "the-cnnbench-cost-command"),
    ("## [Linked](https://example.org) heading_name", "linked-heading_name"),
    ("## A/B — 3.5x", "ab--35x"),
])
def test_slugs_are_githubs(heading, anchor):
    assert slug(HEADING.match(heading).group(2)) == anchor


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Two words\n\n## Two words\n")
    good = tmp_path / "README.md"
    good.write_text("# x\n\n[a](docs/page.md) [b](docs/page.md#two-words) [c](docs/page.md#two-words-1) [d](#x)\n"
                    "[e](https://example.org/nowhere.md#none) ![f](docs/)\n\n```\n[in code](missing.md)\n```\n"
                    "`[inline](missing.md)`\n")
    assert broken_links(good) == []
    bad = tmp_path / "BAD.md"
    bad.write_text("# Bad\n\n[gone](docs/gone.md)\n[anchor](docs/page.md#three-words)\n[here](#nowhere)\n"
                   "[up](../outside.md)\n[ref]: docs/missing.md\n")
    problems = broken_links(bad)
    assert len(problems) == 5, problems
    assert "no such file" in problems[0] and "#three-words" in problems[1] and "#nowhere" in problems[2]


def test_the_quickstart_rule_fails_on_a_changed_command():
    text = "# x\n\n## Quickstart\n\n```bash\nmake offline   # comment\nmake tests\n```\n\n## Next\n"
    commands = [line.split("#", 1)[0].strip() for line in bash_blocks(section(text, "Quickstart"))[0]]
    assert [c for c in commands if c] != QUICKSTART_COMMANDS


# ------------------------------------------------------------------ the front page's results


RESULT_ROW = re.compile(r"^\| `(?P<run>[^`]+)` \| (?P<seeds>\d+) \| (?P<params>[\d.]+) \| (?P<top1>[\d.]+) "
                        r"\((?P<low>[\d.]+) … (?P<high>[\d.]+)\) \| (?P<f1>[\d.]+) \|$")
RESULTS_LINE = re.compile(r"\((?P<runs>\d+) runs, (?P<models>\d+) trained models, (?P<images>\d+)\s+test images")


def test_readme_results_are_the_committed_metrics():
    """The front page's table of the offline suite is reports/metrics.json, rounded as printed: a regeneration
    that moves a number and leaves the README behind fails here, naming the run."""
    import json

    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    text = README.read_text()
    rows = {m["run"]: m for m in map(RESULT_ROW.match, text.splitlines()) if m}
    assert set(rows) == set(metrics), f"README rows {sorted(rows)} vs reports/metrics.json {sorted(metrics)}"
    for run, row in rows.items():
        m = metrics[run]
        printed = (int(row["seeds"]), row["params"], row["top1"], row["low"], row["high"], row["f1"])
        expected = (int(m["seeds"]), f"{m['params'] / 1e6:.2f}", f"{100 * m['test_top1']:.1f}",
                    f"{100 * m['test_top1_ci_low']:.1f}", f"{100 * m['test_top1_ci_high']:.1f}",
                    f"{m['test_macro_f1']:.3f}")
        assert printed == expected, f"{run}: README says {printed}, reports/metrics.json {expected}"
    summary = RESULTS_LINE.search(" ".join(text.split()))
    assert summary, "the sentence before the table (N runs, M trained models, K test images) is gone"
    assert int(summary["runs"]) == len(metrics)
    assert int(summary["models"]) == sum(int(m["seeds"]) for m in metrics.values())

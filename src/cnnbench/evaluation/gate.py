"""The CI regression gate: the gated suite's metrics against a committed baseline.

Each gated metric has its direction in config.METRICS: a higher-is-better metric (accuracies,
macro-F1) fails when it drops by more than its tolerance (DROP), a lower-is-better one (a loss, a
time) when it rises by more (RISE); tolerances are absolute differences in the metric's units. A
value that is not finite, or a fraction outside [0, 1], fails on either side (BAD). A run or
metric in the baseline but absent now fails too (MISSING); one absent from the baseline is NEW and
passes, so adding a run never breaks CI. Values come from the run's eval/metrics.json, then from
the flat keys of its train/metrics.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import read_json_object, write_json_atomic
from cnnbench.params.config import METRICS, CheckConfig
from cnnbench.training.replicates import find_replicates

COLUMNS = ("run", "metric", "baseline", "now", "delta", "tolerance", "verdict")
FAILING = ("DROP", "RISE", "BAD", "MISSING")


def collect_metrics(check_cfg: CheckConfig, runs_dir: str | Path) -> dict[str, dict[str, float]]:
    """{replicate: {metric: value}} for the gated metrics of every run's seeds under runs_dir."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CnnbenchError(f"{runs_dir}: no such directory; produce the metrics first: "
                            f"dvc repro report@{check_cfg.suite}")
    out = {}
    for replicate in find_replicates(runs_dir):
        sources = [m for m in (read_json_object(replicate.eval_dir / "metrics.json"),
                               read_json_object(replicate.train_dir / "metrics.json")) if m is not None]
        if not sources:
            continue
        values = {}
        for metric in check_cfg.metrics:
            value = next((m[metric] for m in sources if _is_number(m.get(metric))), None)
            if value is not None:
                values[metric] = float(value)
        out[replicate.name] = values
    return out


def update_baseline(check_cfg: CheckConfig, runs_dir: str | Path, baseline_path: str | Path) -> Path:
    """Write the current gated metrics as the baseline (sorted JSON, written atomically), with each metric's seed
    spread when a run has several seeds (what `check.tolerance_from_seeds` gates with)."""
    metrics = collect_metrics(check_cfg, runs_dir)
    absent = _absent_metrics(check_cfg, metrics)
    if absent:
        raise CnnbenchError(f"{runs_dir}: no run has the gated metric(s) {', '.join(absent)} (check.metrics); "
                            f"fix a misspelt name, or run `dvc repro report@{check_cfg.suite}` first")
    spread = seed_spread(metrics, check_cfg.metrics)
    return write_json_atomic(baseline_path, {"suite": check_cfg.suite, "metrics": metrics,
                                             **({"seed_spread": spread} if spread else {})})


def seed_spread(metrics: dict[str, dict[str, float]], names: tuple[str, ...]) -> dict[str, dict]:
    """Per metric, one seed's standard deviation pooled over the runs with several seeds (each run's variance
    over its seeds, weighted by its degrees of freedom), with those runs and the degrees of freedom."""
    by_run: dict[str, list[dict[str, float]]] = {}
    for replicate, values in metrics.items():
        by_run.setdefault(replicate.split("/")[0], []).append(values)  # `run/seed<k>` when a run has several
    out = {}
    for metric in names:
        squares, dof, runs = 0.0, 0, []
        for run, seeds in sorted(by_run.items()):
            values = [v[metric] for v in seeds if metric in v]
            if len(values) > 1:
                mean = sum(values) / len(values)
                squares += sum((v - mean) ** 2 for v in values)
                dof += len(values) - 1
                runs.append(run)
        if dof:
            out[metric] = {"std": round(math.sqrt(squares / dof), 6), "dof": dof, "runs": runs}
    return out


def load_baseline(baseline_path: str | Path) -> dict:
    """The baseline file's {"suite", "metrics"}; a missing or broken file says how to make one."""
    path = Path(baseline_path)
    hint = "create it with `cnnbench update-baseline` (after `dvc repro`) and commit it"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CnnbenchError(f"{path}: no baseline file; {hint}") from None
    except (OSError, ValueError) as err:
        raise CnnbenchError(f"{path}: unreadable baseline ({err}); {hint}") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not all(
            isinstance(v, dict) and all(_is_number(x) for x in v.values()) for v in metrics.values()):
        raise CnnbenchError(f"{path}: not a baseline file (expected {{\"suite\", \"metrics\": {{run: "
                            f"{{metric: value}}}}}}); {hint}")
    for run, values in metrics.items():
        for metric, value in values.items():
            if not _plausible(metric, value):
                raise CnnbenchError(f"{path}: {run}.{metric} is {value}, not a value that metric can take; a "
                                    f"baseline must hold measured values. {hint}")
    return data


def check_metrics(check_cfg: CheckConfig, runs_dir: str | Path, baseline_path: str | Path) -> tuple[bool, str]:
    """Compare the current metrics with the baseline: (passed, a plain-text table ending in a summary line).

    A gate that would compare nothing is an error, not a pass: an empty baseline, a gated metric
    that no run has (a misspelt `check.metrics`), or no (run, metric) present on both sides.
    """
    baseline = load_baseline(baseline_path)
    if baseline.get("suite") not in (None, check_cfg.suite):
        raise CnnbenchError(f"{baseline_path}: a baseline of suite {baseline['suite']!r}, but check.suite is "
                            f"{check_cfg.suite!r}; run `cnnbench update-baseline` to replace it")
    if not any(baseline["metrics"].values()):
        raise CnnbenchError(f"{baseline_path}: the baseline holds no metrics, so the gate would check nothing; "
                            f"run `cnnbench update-baseline` after `dvc repro report@{check_cfg.suite}`")
    now = collect_metrics(check_cfg, runs_dir)
    absent = _absent_metrics(check_cfg, now)
    if absent:
        raise CnnbenchError(f"{runs_dir}: no run has the gated metric(s) {', '.join(absent)}; is check.metrics "
                            f"misspelt? A gate over a metric nobody reports would check nothing.")
    spread = {m: s["std"] for m, s in (baseline.get("seed_spread") or {}).items()
              if isinstance(s, dict) and _is_number(s.get("std")) and s["std"] >= 0}
    unmeasured = [m for m in check_cfg.metrics if m not in spread and m not in check_cfg.tolerances]
    if check_cfg.tolerance_from_seeds and unmeasured:
        raise CnnbenchError(f"{baseline_path}: check.tolerance_from_seeds, but the baseline records no seed spread "
                            f"of {', '.join(unmeasured)}: give a run of suite {check_cfg.suite!r} several seeds and "
                            f"run `cnnbench update-baseline`, or set a tolerance")
    rows = compare(check_cfg, baseline["metrics"], now, spread)
    if not any(r[-1] in ("ok", "DROP", "RISE", "BAD") for r in rows):
        raise CnnbenchError(f"no run is in both {baseline_path} and {runs_dir}: the gate would compare nothing; "
                            f"run `dvc repro report@{check_cfg.suite}`, or `cnnbench update-baseline` if the runs "
                            f"were renamed on purpose")
    failed = sum(r[-1] in FAILING for r in rows)
    new = sum(r[-1] == "NEW" for r in rows)
    ok = len(rows) - failed - new
    lines = [format_table(rows)] if rows else []
    if failed:
        lines.append("A change for the worse larger than the tolerance (DROP of a higher-is-better metric, RISE of "
                     "a lower-is-better one), a value no run can have (BAD), or a run or metric gone missing fails "
                     "the gate. If the change is intended, run `cnnbench update-baseline` and commit the baseline.")
    lines.append(f"check-metrics: {ok} ok, {failed} failed" + (f", {new} new" if new else ""))
    return failed == 0, "\n".join(lines)


def compare(check_cfg: CheckConfig, baseline: dict, now: dict,
            spread: dict[str, float] | None = None) -> list[tuple[str, ...]]:
    """One row per (run, gated metric) present on either side: formatted cells, the verdict last. `spread`:
    each metric's seed std from the baseline, for `check.tolerance_from_seeds`."""
    rows = []
    for run in sorted(set(baseline) | set(now)):
        before, after = baseline.get(run, {}), now.get(run, {})
        for metric in check_cfg.metrics:
            b, n = before.get(metric), after.get(metric)
            if b is None and n is None:
                continue
            tol = check_cfg.tolerance_for(metric, (spread or {}).get(metric))
            if b is None:
                verdict, delta = "NEW", None
            elif n is None:
                verdict, delta = "MISSING", None
            elif not _plausible(metric, n):  # NaN, infinite, or an accuracy outside [0, 1]: a broken run
                verdict, delta = "BAD", None
            else:
                delta = n - b
                worse = -delta if METRICS[metric].better == "higher" else delta
                # The epsilon keeps a change of exactly the tolerance passing.
                verdict = "ok" if worse <= tol + 1e-12 else ("DROP" if METRICS[metric].better == "higher" else "RISE")
            rows.append((run, metric, _num(b), _num(n), "" if delta is None else f"{delta:+.4f}",
                         f"{tol:.4f}", verdict))
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Aligned plain-text columns with a header; numbers right-aligned."""
    table = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5}

    def line(row):
        cells = (c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join([line(COLUMNS), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _absent_metrics(check_cfg: CheckConfig, metrics: dict[str, dict[str, float]]) -> list[str]:
    """The gated metrics that no run has."""
    return [m for m in check_cfg.metrics if not any(m in values for values in metrics.values())]


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _plausible(metric: str, value: float) -> bool:
    """Whether `value` is one `metric` can take: finite, and in [0, 1] for a fraction."""
    known = METRICS.get(metric)
    return math.isfinite(value) and not (known is not None and known.fraction and not 0.0 <= value <= 1.0)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)



"""The GPU benchmark's JSON (bench/gpu.py) as markdown tables, for the README and a quick read.

Renders a report at any point of its run: a section with some rows shows those rows, a row or a
section that failed shows its error.
"""

from __future__ import annotations

LOOPS = ("reference", "cnnbench", "resident")
VARIANTS = ("fp32", "tf32", "bf16", "bf16_compiled")  # the precision section's, in this order
COMPARISONS = (("tf32", "fp32"), ("bf16", "fp32"), ("bf16_compiled", "bf16"))  # (variant, its reference)


def markdown(report: dict) -> str:
    """The whole report: environment, then one section per measurement that has started."""
    env = report["environment"]
    lines = [f"# GPU benchmark: {env['device']}", "",
             f"torch {env['torch']}, torchvision {env['torchvision']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
             f"Python {env['python']}; {env['gpus']} GPU(s), {env['cpus']} CPUs; started {env['started']}, "
             f"took {report['seconds']:.0f} s{'' if report['complete'] else ' (incomplete: the run had not ended)'}.",
             f"Command: `{env['command']}`", ""]
    render = {"epochs": epochs_lines, "throughput": throughput_lines, "precision": precision_lines,
              "compile": compile_lines, "ddp": ddp_lines}
    for section, lines_of in render.items():
        part = report.get(section)
        if part is None:
            continue
        lines += lines_of(part) if part.get("rows") or "skipped" in part else [f"## {section}", ""]
        if "error" in part:
            lines += [f"The {section} section failed: `{part['error']}`", ""]
    return "\n".join(lines).rstrip() + "\n"


def epochs_lines(part: dict) -> list[str]:
    lines = ["## Seconds per epoch of the study's runs", "",
             f"cnnbench's loop with each run's own training settings (bf16 autocast and channels_last on CUDA), "
             f"on synthetic data of the run's image size; {part['timed_epochs']} timed epoch(s) after "
             f"{part['warmup_steps']} warm-up steps. The study's figures come from an unknown GPU: compare the "
             "ratios between runs, not one ratio with 1.", "",
             "| run | model | px | batch | images | s/epoch | study s/epoch | ours / study |",
             "|---|---|---|---|---|---|---|---|"]
    for r in part["rows"]:
        if "error" not in r:
            lines.append(f"| {r['run']} | {r['model']} | {r['image_size']} | {r['batch_size']} | {r['images']:,} | "
                         f"{r['seconds_per_epoch']:.2f} | {r['study_seconds_per_epoch'] or 'n/a'} | "
                         f"{_ratio(r['ratio_vs_study'], 3)} |")
    errors = [f"- {r['run']}: `{r['error']}`" for r in part["rows"] if "error" in r]
    return lines + [""] + (["Failed:", *errors, ""] if errors else [])


def throughput_lines(part: dict) -> list[str]:
    lines = ["## Training throughput", "",
             f"Images/s over {part['timed_epochs']} timed epoch(s), synthetic data; bf16 autocast and channels_last "
             f"on CUDA. *reference*: torchvision Dataset + DataLoader + PIL transforms, {part['workers']} persistent "
             f"workers (pinned memory on CUDA), warmed up on {part['warmup_epochs']} whole epoch(s); *cnnbench*: "
             f"data on the device, augmented there, warmed up on {part['warmup_steps']} steps; *resident*: the same "
             "without augmentation (the ceiling). Peak MB: the timed epochs' allocator peak less the resident "
             "dataset (its own column).", "",
             "| model | px | batch | steps/epoch | reference | cnnbench | resident | cnnbench / reference "
             "| cnnbench / resident | peak MB ref. | peak MB cnnbench | resident data MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    errors = []
    for r in part["rows"]:
        if "error" in r:
            errors.append(f"- {r['model']} at {r['image_size']} px: `{r['error']}`")
            continue
        rates = [_number(r[loop].get("images_per_sec")) for loop in LOOPS]
        ratios = [_ratio(r["ratio_cnnbench_vs_reference"]), _ratio(r["ratio_cnnbench_vs_resident"])]
        peaks = [_number(r["reference"].get("peak_mem_mb")), _number(r["cnnbench"].get("peak_mem_mb"))]
        lines.append(f"| {r['model']} | {r['image_size']} | {r['batch_size']} | {r['steps_per_epoch']} | "
                     + " | ".join(rates + ratios + peaks) + f" | {_number(r['resident_data_mb'])} |")
        errors += [f"- {r['model']} at {r['image_size']} px, {loop}: `{r[loop]['error']}`" for loop in LOOPS
                   if "error" in r[loop]]
    return lines + [""] + (["Failed:", *errors, ""] if errors else [])


def precision_lines(part: dict) -> list[str]:
    lines = ["## Precision and compilation: digits test accuracy", "",
             f"Run `{part['run']}` ({part['model']}, {part['epochs']} epochs), {part['seeds']} seed(s); the tolerance "
             f"is params.yaml's check.tolerance, {part['tolerance']}, on the mean. fp32 runs with TF32 off; tf32 is "
             "fp32 with TF32 matmuls and convolutions; bf16 autocast runs with TF32 on, as cnnbench trains."
             + ("" if part["amp_active"] else
                " On the CPU cnnbench ignores bf16 autocast and TF32: all are fp32 here."),
             "", "| variant | test accuracy per seed | mean |", "|---|---|---|"]
    for r in part["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: `{r['error']}` | n/a |")
        else:
            lines.append(f"| {r['variant']} | {', '.join(f'{v:.4f}' for v in r['test_acc'])} | {r['mean']:.4f} |")
    if "differences" not in part:
        return lines + [""]
    differences = [(f"{a} - {b}", part["differences"][f"{a} - {b}"]) for a, b in COMPARISONS]  # the JSON sorts keys
    shown = [f"{name}: {'n/a' if d is None else f'{d:+.4f}'}" for name, d in differences]
    verdict = {True: "agree", False: "**disagree**", None: "nothing to compare"}[part["agree"]]
    return lines + ["", f"{'; '.join(shown)}: {verdict} within {part['tolerance']}.", ""]


def compile_lines(part: dict) -> list[str]:
    lines = ["## torch.compile", "",
             f"{part['model']} at {part['image_size']} px, batch {part['batch_size']}, resident loop, backend "
             f"`{part['backend']}`, `dynamic=False`. Eval accuracy with and without it: the precision section's "
             "*bf16_compiled* against *bf16*.", "", "| mode | ms/step | first steps (s) |", "|---|---|---|"]
    for r in part["rows"]:
        lines.append(f"| {r['mode']} | failed: `{r['error']}` | n/a |" if "error" in r else
                     f"| {r['mode']} | {r['ms_per_step']} | {r['first_steps_seconds']} |")
    if "speedup" in part:
        lines += ["", f"Speedup {part['speedup']:.2f}x; compiling added {part['compile_seconds']} s to the first "
                      "steps."]
    return lines + [""]


def ddp_lines(part: dict) -> list[str]:
    if "skipped" in part:
        return ["## DistributedDataParallel", "", f"Skipped: {part['skipped']}.", ""]
    r = part["rows"][0]
    return ["## DistributedDataParallel", "",
            f"{part['model']} at {part['image_size']} px, cnnbench's loop, {part['world']} ranks ({part['backend']}), "
            f"batch {part['batch_per_rank']} per rank: {r['images_per_sec']:,.0f} images/s against "
            f"{r['single_images_per_sec'] or 'n/a'} on one device: scaling {r['scaling']} of linear.", ""]


def _number(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ratio(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}x"

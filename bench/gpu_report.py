"""The GPU benchmark's JSON (bench/gpu.py) as markdown tables, for the README and a quick read."""

from __future__ import annotations

LOOPS = ("reference", "cnnbench", "resident")
VARIANTS = ("fp32", "bf16", "bf16_compiled")  # the precision section's, in this order (the JSON sorts its keys)


def markdown(report: dict) -> str:
    """The whole report: environment, then one section per measurement that has run."""
    env, settings = report["environment"], report["settings"]
    lines = [f"# GPU benchmark: {env['device']}", "",
             f"torch {env['torch']}, torchvision {env['torchvision']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
             f"Python {env['python']}; {env['gpus']} GPU(s), {env['cpus']} CPUs; started {env['started']}, "
             f"took {report['seconds']:.0f} s{'' if report['complete'] else ' (incomplete: a section did not run)'}.",
             f"Command: `{env['command']}`", ""]
    render = {"throughput": lambda part: throughput_table(part, settings), "compile": compile_lines,
              "precision": precision_lines, "ddp": ddp_lines}
    for section, lines_of in render.items():
        part = report.get(section)
        if isinstance(part, dict) and "error" in part:
            lines += [f"## {section}", "", f"Failed: `{part['error']}`", ""]
        elif part is not None:
            lines += lines_of(part)
    return "\n".join(lines).rstrip() + "\n"


def throughput_table(rows: list[dict], settings: dict) -> list[str]:
    lines = ["## Training throughput", "",
             f"Images/s over {settings['epochs']} timed epoch(s) after {settings['warmup_steps']} warm-up steps, "
             f"synthetic data; bf16 autocast and channels_last on CUDA; DataLoader with {settings['workers']} "
             "persistent workers (pinned memory on CUDA). *reference*: torchvision Dataset + DataLoader + PIL transforms; "
             "*cnnbench*: data on the device, augmented there; *resident*: the same without augmentation (the "
             "ceiling). Peak MB: the timed epochs' allocator peak less the resident dataset (its own column).", "",
             "| model | px | batch | steps/epoch | reference | cnnbench | resident | cnnbench / reference "
             "| cnnbench / resident | peak MB ref. | peak MB cnnbench | resident data MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    errors = []
    for r in rows:
        rates = [_number(r[loop].get("images_per_sec")) for loop in LOOPS]
        ratios = [_ratio(r["ratio_cnnbench_vs_reference"]), _ratio(r["ratio_cnnbench_vs_resident"])]
        peaks = [_number(r["reference"].get("peak_mem_mb")), _number(r["cnnbench"].get("peak_mem_mb"))]
        lines.append(f"| {r['model']} | {r['image_size']} | {r['batch_size']} | {r['steps_per_epoch']} | "
                     + " | ".join(rates + ratios + peaks) + f" | {_number(r['resident_data_mb'])} |")
        errors += [f"- {r['model']} at {r['image_size']} px, {loop}: `{r[loop]['error']}`" for loop in LOOPS
                   if "error" in r[loop]]
    return lines + [""] + (["Failed loops:", *errors, ""] if errors else [])


def compile_lines(c: dict) -> list[str]:
    return ["## torch.compile", "",
            f"{c['model']} at {c['image_size']} px, batch {c['batch_size']}, resident loop, backend `{c['backend']}`: "
            f"{c['eager_ms_per_step']} ms/step eager, {c['compiled_ms_per_step']} ms/step compiled "
            f"({c['speedup']:.2f}x); compiling added {c['compile_seconds']} s to the first steps. Eval accuracy with "
            "and without it: the precision section's *bf16 compiled* against *bf16*.", ""]


def precision_lines(p: dict) -> list[str]:
    verdict = "agree" if p["agree"] else "**disagree**"
    lines = ["## Precision and compilation: digits test accuracy", "",
             f"Run `{p['run']}` ({p['model']}, {p['epochs']} epochs), {p['seeds']} seed(s); the tolerance is "
             f"params.yaml's check.tolerance, {p['tolerance']}, on the mean."
             + ("" if p["amp_active"] else " On the CPU cnnbench ignores bf16 autocast: all three are fp32 here."), "",
             "| variant | test accuracy per seed | mean |", "|---|---|---|"]
    for name in VARIANTS:
        lines.append(f"| {name} | {', '.join(f'{v:.4f}' for v in p['test_acc'][name])} | {p['mean'][name]:.4f} |")
    return lines + ["", f"bf16 - fp32: {p['bf16_vs_fp32']:+.4f}; compiled - eager: {p['compiled_vs_eager']:+.4f}: "
                        f"{verdict} within {p['tolerance']}.", ""]


def ddp_lines(d: dict) -> list[str]:
    if "skipped" in d:
        return ["## DistributedDataParallel", "", f"Skipped: {d['skipped']}.", ""]
    return ["## DistributedDataParallel", "",
            f"{d['model']} at {d['image_size']} px, cnnbench's loop, {d['world']} ranks ({d['backend']}), batch "
            f"{d['batch_per_rank']} per rank: {d['images_per_sec']:,.0f} images/s against "
            f"{d['single_images_per_sec'] or 'n/a'} on one device: scaling {d['scaling']} of linear.", ""]


def _number(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"

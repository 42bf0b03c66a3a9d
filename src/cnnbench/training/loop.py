"""train: one run, end to end — data on the device, seeded, checkpointed every epoch, resumable.

Runs unchanged under `torchrun --nproc_per_node=N` (DistributedDataParallel; NCCL on CUDA, gloo
on the CPU): every rank takes its share of each global batch, and rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from cnnbench.core.device import autocast_bf16, device_name, load_average
from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import remove_stale_dirs, staging_dir, write_json_atomic
from cnnbench.data.datasets import DeviceSplit, Normalize, augment, batches, epoch_order
from cnnbench.evaluation.scoring import split_logits
from cnnbench.models.build import build_model
from cnnbench.models.specs import ModelSpec, spec_to_dict
from cnnbench.models.summary import summarize
from cnnbench.models.weights import load_pretrained
from cnnbench.params.config import RunConfig, TrainConfig
from cnnbench.training.checkpoint import (
    BEST,
    LAST,
    TIMINGS,
    ModelCheckpoint,
    TrainingState,
    save_checkpoint,
    weights_digest,
)
from cnnbench.training.distributed import Dist, broadcast_buffers, ranks_in_sync, use_sync_batchnorm
from cnnbench.training.fingerprint import config_hash
from cnnbench.training.precision import bf16_on_offer, step_precision
from cnnbench.training.replicates import replicate_dir
from cnnbench.training.resume import read_progress, read_timings, restore
from cnnbench.training.session import TrainingSession

# On CUDA a finiteness check forces a host sync, so the loss is checked every this many steps (and at
# the end of the epoch); on the CPU it is nearly free (under DDP one scalar all-reduce beside the
# gradients') and checked every step.
NAN_CHECK_EVERY = 50
PROGRESS_DELAY = 5  # seconds into an epoch before its progress bar shows: a short epoch's line is progress enough


class NonFiniteLoss(CnnbenchError):
    """The training loss became NaN or infinite."""


# ------------------------------------------------------------------ environment
# Fewer optimizer steps per epoch than this is warned about: the data is small for the batch.
MIN_STEPS_PER_EPOCH = 10


def configure_torch(cfg: TrainConfig, device: torch.device) -> None:
    """Speed on CUDA (cudnn autotuning, TF32); bitwise reproducibility on the CPU (bf16 autocast included)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif cfg.deterministic:
        # CUDA stays non-deterministic on purpose: AdaptiveAvgPool2d's backward has no deterministic kernel.
        # Its NaN fill of new tensors stays on: without it a step takes 0.84x the time at best (MobileNetV2 on the
        # CPU), but a kernel that read memory it never wrote would then differ between runs, unseen.
        torch.use_deterministic_algorithms(True)


def dropout_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global RNG seed of one epoch on one rank (dropout masks).

    A function of (seed, epoch), so a resumed run draws what an uninterrupted one did; the rank term
    gives each DDP rank its own masks and is zero on rank 0, so single-process runs are unchanged.
    """
    return seed * 10_007 + epoch + rank * 1_000_000_007


# ------------------------------------------------------------------ optimisation


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW); no weight decay on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """One-cycle, or linear warm-up then cosine decay; stepped once per batch."""
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    if cfg.schedule == "onecycle":
        # OneCycleLR divides by its warm-up length minus one and needs a step after the peak, so it takes
        # at least two warm-up steps and three in all; a shorter run just stops before the end.
        warmup = max(2, warmup)
        total_steps = max(total_steps, warmup + 1)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=warmup / total_steps,
            anneal_strategy="linear", cycle_momentum=False, div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------ one epoch


def train_one_epoch(model, optimizer, schedule, data: DeviceSplit, norm: Normalize, cfg: TrainConfig,
                    epoch: int, env: Dist, amp: bool, progress: bool, label: str = "") -> dict:
    """One pass over the training split; returns summed loss, correct and seen counts."""
    model.train()
    order = epoch_order(len(data), cfg.seed, epoch, data.images.device)
    gen = torch.Generator(device=data.images.device).manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + env.rank)
    torch.manual_seed(dropout_seed(cfg.seed, epoch, env.rank))
    loss_sum = torch.zeros((), device=env.device)
    correct = torch.zeros((), device=env.device, dtype=torch.long)
    seen = 0
    steps = len(data) // cfg.batch_size
    bar = tqdm(total=steps, desc=f"{label} epoch {epoch + 1}".lstrip(), unit="step", leave=False, mininterval=5,
               delay=PROGRESS_DELAY, disable=not (progress and env.main and sys.stderr.isatty()), file=sys.stderr)
    for step, idx in enumerate(batches(order, cfg.batch_size, env.rank, env.world)):
        x = augment(norm(data.images[idx]), cfg.augment, gen)
        y = data.labels[idx]
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_bf16(env.device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if env.device.type == "cpu" or step % NAN_CHECK_EVERY == 0:
            # Decided together: a rank that stopped alone would leave the others waiting in backward's all-reduce.
            everywhere = _all_reduce(loss.detach().float().clone(), env)
            if not torch.isfinite(everywhere):
                raise NonFiniteLoss(f"the training loss became {everywhere.item()} at epoch {epoch + 1}, step "
                                    f"{step + 1}. Lower train.lr, or check the data; the last good checkpoint is kept.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.update()
    bar.close()
    totals = _all_reduce(torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=env.device)]), env)
    if not math.isfinite(totals[0].item()):
        raise NonFiniteLoss(f"the training loss became non-finite during epoch {epoch + 1}. Lower train.lr.")
    return {"loss": totals[0].item() / totals[2].item(), "acc": totals[1].item() / totals[2].item(),
            "images": int(totals[2].item())}


@torch.no_grad()
def evaluate_split(model, data: DeviceSplit, norm: Normalize, env: Dist, batch_size: int = 1024,
                   channels_last: bool = False) -> dict:
    """Loss and accuracy over a whole split, scored as the test split is (each rank a slice, summed)."""
    n = len(data)
    lo, hi = n * env.rank // env.world, n * (env.rank + 1) // env.world
    loss_sum = correct = torch.zeros((), device=env.device)  # a rank with no images (more ranks than images)
    if hi > lo:
        logits = split_logits(model, data.images[lo:hi], norm, batch_size, channels_last=channels_last)
        y = data.labels[lo:hi]
        loss_sum = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(1) == y).sum().float()
    totals = _all_reduce(torch.stack([loss_sum, correct, torch.tensor(float(hi - lo), device=env.device)]), env)
    count = max(1.0, totals[2].item())
    return {"loss": totals[0].item() / count, "acc": totals[1].item() / count}


# ------------------------------------------------------------------ the run


def train_run(run: RunConfig, spec, data_dir: str | Path, run_dir: str | Path, live_dir: str | Path,
              device: str = "auto", progress: bool = True) -> dict:
    """Train one replicate in a session of its own; write checkpoints to run_dir and DVCLive logs to live_dir;
    return its summary."""
    with TrainingSession(data_dir, device) as session:
        return fit(run, spec, session, run_dir, live_dir, progress)


def fit(run: RunConfig, spec, session: TrainingSession, run_dir: str | Path, live_dir: str | Path,
        progress: bool = True) -> dict:
    """Train one replicate (one seed) of `run` in `session`; return its summary. A replicate already trained
    with the same params, data and code is kept; an unfinished one resumes."""
    cfg, env, data = run.train, session.env, session.data
    configure_torch(cfg, env.device)
    train_x, train_y, subset = _training_images(run, session)
    run_dir, live_dir = Path(run_dir), Path(live_dir)
    # With bf16 on offer here or not: a last.pt trained with cpu_amp on AMX is not kept or resumed in fp32 elsewhere.
    fingerprint = config_hash(run, spec, {"data": session.data_hash, "n_train": len(train_y), "world": env.world,
                                          "bf16": bf16_on_offer(cfg, env.device)})
    # last.pt read once, on rank 0: a finished replicate's summary (kept), or the state to resume from.
    found = read_progress(run_dir / LAST, live_dir / "metrics.json", fingerprint, cfg.epochs, env)
    if isinstance(found, dict):
        return found
    train_data = session.device_split("train", train_x, train_y, (cfg.seed,) if subset else ())
    val_data = session.device_split("val", data.splits["val"].x, data.splits["val"].y)
    trainee = build_trainee(spec, cfg, len(data.classes), data.image_size, env, len(train_data) // cfg.batch_size)
    restore(found, trainee.model, trainee.optimizer, trainee.schedule)
    if trainee.fp32_because and env.main:
        print(f"note: run {run.name}: train.cpu_amp is ignored, {trainee.fp32_because}; training in fp32",
              file=sys.stderr, flush=True)
    if found.epoch and env.main:
        print(f"resuming {run.name} from {run_dir / LAST}: {found.epoch}/{cfg.epochs} epochs done", flush=True)
    history, timings = _epochs(run, spec, session, trainee, found, fingerprint, train_data, val_data, run_dir,
                               progress)
    in_sync = ranks_in_sync(trainee.model, env)
    summary = _summary(history, timings, trainee.summary, env, in_sync, train_data.nbytes + val_data.nbytes)
    summary["weights_sha256"] = weights_digest(trainee.model.state_dict())  # last.pt's: a kept seed checks it
    summary["precision"] = "bf16 autocast" if trainee.amp else "fp32"
    if env.main:
        _write_live(live_dir, run, spec.family, history, timings, summary)
    return summary


def _training_images(run: RunConfig, session: TrainingSession) -> tuple:
    """The run's training arrays (train.max_images of them, drawn with its seed, when set), checked against its
    batch size and for a validation split; whether they are a subset."""
    cfg, env, data = run.train, session.env, session.data
    if cfg.batch_size % env.world:
        raise CnnbenchError(f"train.batch_size {cfg.batch_size} must divide evenly across {env.world} processes.")
    train_x, train_y = data.splits["train"].x, data.splits["train"].y
    subset = bool(cfg.max_images and cfg.max_images < len(train_y))
    if subset:
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.max_images]
        index = keep.sort().values.numpy()
        train_x, train_y = train_x[index], train_y[index]
    if len(train_y) < cfg.batch_size:
        raise CnnbenchError(f"run {run.name}: train.batch_size {cfg.batch_size} is larger than the training "
                            f"split ({len(train_y)} images); lower it.")
    steps = len(train_y) // cfg.batch_size
    if steps < MIN_STEPS_PER_EPOCH and env.main:
        print(f"warning: run {run.name}: {len(train_y)} training images at train.batch_size {cfg.batch_size} make "
              f"{steps} step{'s' if steps != 1 else ''} per epoch (under {MIN_STEPS_PER_EPOCH}): the schedule moves "
              f"in coarse jumps and the best epoch is chosen among few updates; a smaller batch gives more steps.",
              file=sys.stderr, flush=True)
    if not len(data.splits["val"].y):
        # The best checkpoint is chosen on validation accuracy: without a split it would be chosen on nothing.
        raise CnnbenchError(f"run {run.name}: dataset {run.dataset} has no validation split, so no epoch can be "
                            f"chosen as best; give it one (datasets.{run.dataset}.val_fraction > 0, or a source "
                            f"with a val split).")
    return train_x, train_y, subset


@dataclasses.dataclass
class Trainee:
    """A model ready to train: the bare model (checkpoints, evaluation), the network the steps run (DDP-wrapped,
    compiled), its optimizer and schedule, and its layer summary."""

    model: nn.Module
    step_net: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    summary: object
    amp: bool
    channels_last: bool
    fp32_because: str | None = None  # why train.cpu_amp is not honoured, when it is not


def build_trainee(spec: ModelSpec, cfg: TrainConfig, num_classes: int, image_size: int, env: Dist,
                  steps_per_epoch: int, backend: str = "inductor") -> Trainee:
    """Model, optimizer and schedule as a run trains them, seeded with cfg.seed (bench/gpu.py builds its own the
    same way: `backend` is torch.compile's, when cfg.compile)."""
    torch.manual_seed(cfg.seed)
    model = build_model(spec, num_classes=num_classes, image_size=image_size)
    if cfg.pretrained:
        load_pretrained(model, spec, cfg.pretrained)
    summary = summarize(model, image_size=image_size)
    model = use_sync_batchnorm(model, cfg, env)
    model.to(env.device)
    if cfg.channels_last:  # CPU too: oneDNN's NHWC depthwise convs (MobileNetV2) are 2.3x faster
        model = model.to(memory_format=torch.channels_last)
    ids = [env.device.index] if env.device.type == "cuda" else None
    net = nn.parallel.DistributedDataParallel(model, device_ids=ids) if env.world > 1 else model
    optimizer = make_optimizer(model, cfg)
    # +1: OneCycleLR's last step would otherwise extrapolate past its final learning rate.
    schedule = make_schedule(optimizer, cfg, cfg.epochs * steps_per_epoch + 1)
    step_net = torch.compile(net, backend=backend, dynamic=False) if cfg.compile else net  # shapes never change
    amp, fp32_because = step_precision(cfg, env.device, summary)
    return Trainee(model, step_net, optimizer, schedule, summary, amp, cfg.channels_last, fp32_because)


def _epochs(run: RunConfig, spec: ModelSpec, session: TrainingSession, trainee: Trainee, state: TrainingState,
            fingerprint: str, train_data: DeviceSplit, val_data: DeviceSplit, run_dir: Path,
            progress: bool) -> tuple[list, list]:
    """The epochs left from `state`, each checkpointed (best.pt when validation improved, last.pt always, after
    the timings); the history and timings of every epoch."""
    cfg, env, data, model = run.train, session.env, session.data, trainee.model
    history, best_acc = list(state.history), state.best_val_acc
    timings = read_timings(run_dir / TIMINGS, state.epoch)
    cuda = env.device.type == "cuda"
    label = f"{run.name} seed {cfg.seed}"  # names the progress bar and the epoch line
    for epoch in range(state.epoch, cfg.epochs):
        _sync(env)
        if cuda:
            torch.cuda.reset_peak_memory_stats(env.device)
        start = time.perf_counter()
        stats = train_one_epoch(trainee.step_net, trainee.optimizer, trainee.schedule, train_data, session.norm, cfg,
                                epoch, env, trainee.amp, progress, label=label)
        _sync(env)
        seconds = time.perf_counter() - start
        peak_mb = _training_peak_mb(env, train_data.nbytes + val_data.nbytes)  # before evaluation's larger batches
        # Evaluation runs the bare model, with no hidden collective, on rank 0's BatchNorm statistics:
        # a rank whose validation shard is empty then has nothing to wait for.
        broadcast_buffers(model, env)
        val = evaluate_split(model, val_data, session.norm, env, channels_last=trainee.channels_last)
        if not math.isfinite(val["loss"]):
            raise NonFiniteLoss(f"the validation loss became {val['loss']} after epoch {epoch + 1}; lower train.lr. "
                                f"The last good checkpoint is kept.")
        row = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
               "val_acc": val["acc"], "lr": trainee.schedule.get_last_lr()[0]}
        history.append(row)
        # The first epoch of every process pays for warm-up (autotuning, compilation, allocator growth).
        timings.append({"epoch": epoch + 1, "epoch_seconds": seconds, "images_per_sec": stats["images"] / seconds,
                        "warmup": epoch == state.epoch, "peak_mem_mb": peak_mb, "load_average": load_average()})
        improved = val["acc"] > best_acc
        best_acc = max(best_acc, val["acc"])
        if env.main:
            if improved:
                save_checkpoint(ModelCheckpoint(
                    weights=model.state_dict(), spec=spec_to_dict(spec), run=run.name, dataset=run.dataset,
                    classes=list(data.classes), image_size=data.image_size, mean=list(data.mean),
                    std=list(data.std), epoch=epoch + 1, val_acc=val["acc"]), run_dir / BEST)
            write_json_atomic(run_dir / TIMINGS, {"epochs": timings})  # before LAST: never fewer rows than it
            save_checkpoint(TrainingState(
                epoch=epoch + 1, weights=model.state_dict(), optimizer=trainee.optimizer.state_dict(),
                schedule=trainee.schedule.state_dict(), history=history, best_val_acc=best_acc,
                config_hash=fingerprint), run_dir / LAST)
            print(f"{label}  " + _epoch_line({**row, **timings[-1]}, cfg.epochs), flush=True)
    return history, timings


def train_replicates(run: RunConfig, spec: ModelSpec, data_dir: str | Path, run_dir: str | Path,
                     live_dir: str | Path, device: str = "auto", progress: bool = True) -> dict[int, dict]:
    """Train every seed of `run` into `<run_dir>/seed<k>` and `<live_dir>/seed<k>`, in one session (one process
    group, the data read and hashed once); return their summaries.

    Seeds already trained with the same params, data and code are kept, so adding a seed trains one
    model; the outputs of seeds no longer declared are removed, so nothing stale is reported.
    """
    run_dir, live_dir = Path(run_dir), Path(live_dir)
    seeds = run.replicate_seeds
    for parent in (run_dir, live_dir):
        remove_stale_dirs(parent, "seed*", {replicate_dir(seed) for seed in seeds})
    with TrainingSession(data_dir, device) as session:
        return {seed: fit(run.replicate(seed), spec, session, run_dir / replicate_dir(seed),
                          live_dir / replicate_dir(seed), progress) for seed in seeds}


def _training_peak_mb(env: Dist, resident_bytes: int) -> float:
    """Peak memory of the epoch just trained: on CUDA the allocator's peak less the resident dataset
    (what a DataLoader pipeline would also hold), on the CPU the process's peak RSS so far."""
    if env.device.type == "cuda":
        return (torch.cuda.max_memory_allocated(env.device) - resident_bytes) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(history: list[dict], timings: list[dict], model_summary, env: Dist, in_sync: bool,
             resident_bytes: int) -> dict:
    # Warm-up epochs (the first of each process) are left out when any other epoch was timed:
    # autotuning and compilation cost time and, on CUDA, workspace memory that training does not need.
    steady = [t for t in timings if not t.get("warmup")] or timings
    sec = statistics.median(t["epoch_seconds"] for t in steady)
    rates = [t["images_per_sec"] for t in steady]
    measured = [t for t in timings if "peak_mem_mb" in t]  # rows of an older run resumed here have none
    peak = max(t["peak_mem_mb"] for t in [t for t in measured if not t.get("warmup")] or measured)
    kind = "cuda_train_max_allocated" if env.device.type == "cuda" else "cpu_peak_rss"
    loads = [t["load_average"] for t in timings if t.get("load_average") is not None]
    out = {
        "best_val_acc": max(row["val_acc"] for row in history),
        "final_val_acc": history[-1]["val_acc"],
        "sec_per_epoch": round(sec, 4),
        "train_seconds": round(sum(t["epoch_seconds"] for t in timings), 2),  # every epoch, warm-up included
        "images_per_sec": round(statistics.median(rates), 1),
        "peak_mem_mb": round(peak, 1),
        "peak_mem_kind": kind,
        "resident_data_mb": round(resident_bytes / 2**20, 1),
        "params": int(model_summary.params),
        "flops_per_image": int(model_summary.flops),
        "device": device_name(env.device),
        "world_size": env.world,
        "epochs": len(history),
        # The machine's 1-minute load average at the end of each epoch, at its highest, and its CPUs: above them,
        # other work shared the CPUs and the timings above are inflated (the report warns).
        "train_load_max": round(max(loads), 2) if loads else None,
        "cpus": os.cpu_count(),
    }
    if env.world > 1:
        out["ranks_in_sync"] = in_sync
    return out


def _write_live(live_dir: Path, run: RunConfig, family: str, history: list[dict], timings: list[dict],
                summary: dict) -> None:
    """Write the DVCLive logs from the full history, so a resumed run logs exactly what an uninterrupted one does.

    They are written into a staging directory that replaces live_dir whole: a failure leaves the old logs.
    """
    from dvclive import Live

    with staging_dir(live_dir) as tmp, Live(dir=str(tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        live.log_params({"run": run.name, "suite": run.suite, "dataset": run.dataset, "model": run.model,
                         "model_family": family, "train": dataclasses.asdict(run.train)})
        seconds = {t["epoch"]: t["epoch_seconds"] for t in timings}
        for row in history:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                split, name = key.split("_")
                live.log_metric(f"{split}/{name}", round(row[key], 6))
            live.log_metric("lr", row["lr"])
            if row["epoch"] in seconds:
                live.log_metric("epoch_seconds", round(seconds[row["epoch"]], 4))
            live.next_step()
        live.summary.update(summary)


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2%}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:6.2%}  lr {row['lr']:.4g}  "
            f"{row['epoch_seconds']:.1f}s  {row['images_per_sec']:,.0f} img/s")


def _all_reduce(t: torch.Tensor, env: Dist) -> torch.Tensor:
    if env.world > 1:
        dist.all_reduce(t)
    return t


def _sync(env: Dist) -> None:
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)

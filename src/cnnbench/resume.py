"""Picking up what an earlier invocation of a run left: a finished replicate to keep, an unfinished one
to resume, or nothing usable (other settings, other code) and a fresh start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from cnnbench.checkpoint import TrainingState, load_training_state
from cnnbench.distributed import Dist
from cnnbench.errors import CnnbenchError
from cnnbench.files import read_json_object


def finished_summary(last: Path, metrics: Path, fingerprint: str, epochs: int, env: Dist) -> dict | None:
    """The summary of this exact replicate when it already finished (same params, data and code), else None.

    DVC reruns a run's train stage when its seeds change; the seeds already trained are kept. Rank 0
    decides and tells the others, so every rank of a DDP run takes the same path.
    """
    summary = _finished_on_disk(last, metrics, fingerprint, epochs) if env.main else None
    if env.world > 1:
        box = [summary]
        dist.broadcast_object_list(box, src=0)
        summary = box[0]
    if summary is not None and env.main:
        print(f"{last.parent.name}: already trained with these params, data and code ({epochs} epochs); kept",
              flush=True)
    return summary


def _finished_on_disk(last: Path, metrics: Path, fingerprint: str, epochs: int) -> dict | None:
    if not last.is_file() or not metrics.is_file():
        return None
    try:
        state = load_training_state(last, "cpu")
    except CnnbenchError:
        return None  # resume says why
    summary = read_json_object(metrics)
    return summary if state.config_hash == fingerprint and state.epoch >= epochs and summary else None


def resume(path: Path, fingerprint: str, epochs: int, model, optimizer, schedule, env: Dist) -> TrainingState:
    """The state of an unfinished run with the same settings, loaded into the objects; else a fresh start.

    Under DDP rank 0 alone reads last.pt and sends the others what it found: on several machines only
    node 0 has it, and every rank must start from the same epoch and weights.
    """
    found = _resumable_state(path, fingerprint, epochs, env) if env.main else None
    if env.world > 1:
        box = [found]
        dist.broadcast_object_list(box, src=0)
        found = box[0]
    if isinstance(found, CnnbenchError):
        raise found
    if found.epoch:
        model.load_state_dict(found.weights)
        optimizer.load_state_dict(found.optimizer)
        schedule.load_state_dict(found.schedule)
    return found


def _resumable_state(path: Path, fingerprint: str, epochs: int, env: Dist) -> TrainingState | CnnbenchError:
    """What rank 0 finds in last.pt: a state to resume, a fresh start (epoch 0), or the error that stops every rank.

    A last.pt that is not a plain-data checkpoint is an error, not a fresh start: cnnbench did not
    write it (its writes are atomic), and deleting it is the user's decision.
    """
    fresh = TrainingState(epoch=0, weights={}, optimizer={}, schedule={})
    if not path.is_file():
        return fresh
    try:
        # Under DDP on the CPU side: the state travels to other ranks, whose devices are not this one.
        state = load_training_state(path, env.device if env.world == 1 else "cpu")
    except CnnbenchError as err:
        return CnnbenchError(f"{err} Delete it to train this run from scratch.")
    if state.config_hash != fingerprint:
        print(f"note: {path} was trained with other settings; training from scratch", file=sys.stderr)
        return fresh
    if state.epoch >= epochs:
        # Finished with these settings, but its logs are gone (finished_summary kept it otherwise): the
        # summary cannot be rebuilt without its timings and memory, so the replicate trains again.
        print(f"note: {path} holds a finished run ({state.epoch}/{epochs} epochs); training from scratch",
              file=sys.stderr)
        return fresh
    return state


def read_timings(path: Path, epochs_done: int) -> list[dict]:
    """The wall-clock rows of the epochs a resumed run already did (none when they are lost)."""
    data = read_json_object(path) or {}
    rows = data.get("epochs") if isinstance(data.get("epochs"), list) else []
    rows = [r for r in rows if isinstance(r, dict)][:epochs_done]
    return rows if len(rows) == epochs_done else []

"""Picking up what an earlier invocation of a run left: a finished replicate to keep, an unfinished one
to resume, or nothing usable (other settings, other code) and a fresh start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import read_json_object
from cnnbench.training.checkpoint import TrainingState, load_training_state, weights_digest
from cnnbench.training.distributed import Dist, on_rank0


def read_progress(last: Path, metrics: Path, fingerprint: str, epochs: int, env: Dist) -> dict | TrainingState:
    """What an earlier invocation left of this replicate, from one read of last.pt on rank 0, sent to every rank
    at once: the summary of a replicate that finished with the same params, data and code (kept: DVC reruns a
    run's train stage when its seeds change), or the state to resume from (epoch 0: a fresh start).

    Under DDP rank 0 alone reads: on several machines only node 0 has the file, and every rank must take the
    same path, from the same epoch and weights."""
    found = on_rank0(lambda: _progress_on_disk(last, metrics, fingerprint, epochs), env)
    if isinstance(found, CnnbenchError):
        raise found
    if isinstance(found, dict) and env.main:
        print(f"{last.parent.name}: already trained with these params, data and code ({epochs} epochs); kept",
              flush=True)
    return found


def restore(state: TrainingState, model, optimizer, schedule) -> None:
    """Load a state to resume into the objects; nothing for a fresh start."""
    if state.epoch:
        model.load_state_dict(state.weights)
        optimizer.load_state_dict(state.optimizer)
        schedule.load_state_dict(state.schedule)


def _progress_on_disk(path: Path, metrics: Path, fingerprint: str, epochs: int) -> dict | TrainingState | CnnbenchError:
    """What rank 0 finds in last.pt: a finished replicate's summary, a state to resume, a fresh start (epoch 0),
    or the error that stops every rank.

    A last.pt that is not a plain-data checkpoint is an error, not a fresh start: cnnbench did not
    write it (its writes are atomic), and deleting it is the user's decision.
    """
    fresh = TrainingState(epoch=0, weights={}, optimizer={}, schedule={})
    if not path.is_file():
        return fresh
    try:
        # On the CPU: a finished replicate is only read (its epoch and fingerprint), and under DDP the state
        # travels to other ranks, whose devices are not this one; a resumed state is moved when restored.
        state = load_training_state(path, "cpu")
    except CnnbenchError as err:
        return CnnbenchError(f"{err} Delete it to train this run from scratch.")
    if state.config_hash != fingerprint:
        print(f"note: {path} was trained with other settings; training from scratch", file=sys.stderr)
        return fresh
    if state.epoch >= epochs:
        summary = read_json_object(metrics) if metrics.is_file() else None
        if summary and summary.get("weights_sha256") == weights_digest(state.weights):
            return summary
        if summary:
            # The log of another training of this seed (restored from git, or made on another machine, where the
            # same settings train other weights): keeping it would report that training's curves and timings.
            print(f"note: {metrics} describes other weights than {path} (another training's log); training again",
                  file=sys.stderr)
            return fresh
        # Finished with these settings, but its logs are gone: the summary cannot be rebuilt without its
        # timings and memory, so the replicate trains again.
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

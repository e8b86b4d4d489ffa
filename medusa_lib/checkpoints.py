"""Training checkpoints: a run folder's heads, LoRA adapter, optimizer and trainer state, written whole.

A checkpoint folder is what `MedusaModel.save_pretrained` writes (heads.safetensors, medusa_config.json, the
model card), plus `trainer.pt` (the trainer state and the optimizer's) and, in Medusa-2 (Cai et al., 2024,
Sec. 2.2.2), the PEFT adapter. Each is written atomically (a temporary folder, then a rename), so an
interrupted save never leaves half a checkpoint; `load_checkpoint` refuses a folder that holds other heads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from medusa_lib.files import LOCK_NAME, atomic_dir, atomic_write_text, check_writable, read_tensors
from medusa_lib.heads import CONFIG_NAME, DRAFT_NAME, MedusaModel, read_config, read_draft_ids


def save_checkpoint(mm: MedusaModel, directory: Path, state: dict, optimizer=None) -> None:
    """Write a whole checkpoint folder atomically: a fresh temporary folder, then a rename."""
    summary = {k: v for k, v in state.items() if k not in ("history", "sched")}
    with atomic_dir(directory) as tmp:
        mm.save_pretrained(tmp, extra={"training": summary})
        torch.save({"state": state, "optimizer": optimizer.state_dict() if optimizer else None}, tmp / "trainer.pt")
        if is_peft(mm.base):
            mm.base.save_pretrained(tmp / "adapter")


RESTART = "the checkpoint cannot be resumed: start again with --overwrite (or resume from a copy of the run)"


def load_checkpoint(mm: MedusaModel, directory: Path, optimizer=None) -> dict:
    """Restore heads (adapter, optimizer) from a checkpoint folder; returns the trainer state."""
    directory = Path(directory)
    saved = read_config(directory / CONFIG_NAME)  # an old config without "kind" reads as Medusa heads
    mine = mm.heads.config_dict()
    diff = [f"{k}={saved.get(k)} there, {v} here" for k, v in mine.items() if saved.get(k) != v]
    draft = directory / DRAFT_NAME
    there = read_draft_ids(draft, mm.heads.vocab_size).numel() if draft.exists() else 0
    here = 0 if mm.draft_ids is None else mm.draft_ids.numel()
    if there != here:
        diff.append(f"draft_size={there} there, {here} here")
    if diff:
        raise ValueError(f"cannot resume from {directory}: it holds other heads ({'; '.join(diff)}); "
                         f"use a new --save_dir, or --overwrite to start again")
    mm.load_weights(directory)
    if (directory / "adapter").exists() and is_peft(mm.base):
        from peft import set_peft_model_state_dict

        adapter = read_tensors(directory / "adapter" / "adapter_model.safetensors", RESTART)
        set_peft_model_state_dict(mm.base, adapter)
    blob = read_tensors(directory / "trainer.pt", RESTART, weights_only=False)
    if optimizer is not None and blob["optimizer"] is not None:
        optimizer.load_state_dict(blob["optimizer"])
    return blob["state"]


def check_save_dir(save_dir, resume: bool = False, overwrite: bool = False) -> Path | None:
    """A writable folder that holds no earlier run, unless resuming or overwriting is asked for."""
    if save_dir is None:
        return None
    save_dir = Path(save_dir)
    if resume and overwrite:
        raise ValueError("--resume continues the run in save_dir and --overwrite replaces it: pass one of them")
    if resume and not holds_run(save_dir):
        raise FileNotFoundError(f"nothing to resume: {save_dir} holds no run; drop --resume to start one")
    if holds_run(save_dir) and not (resume or overwrite):
        raise FileExistsError(f"save_dir {save_dir} already holds a run; pass --resume to continue it, "
                              f"--overwrite to replace it, or choose another --save_dir")
    return check_writable(save_dir, "save_dir")


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds anything but a run lock."""
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


RUN_FILES = ("best", "last", "training_record.json")  # what a run writes in its save_dir


def clear_run(save_dir: Path) -> None:
    """--overwrite: remove the earlier run's checkpoints and record before the new run writes any, so that an
    interrupted new run never leaves the old best/ beside its own last/. Other files are left alone."""
    for name in RUN_FILES:
        path = Path(save_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def write_record(save_dir, record: dict) -> None:
    """training_record.json next to the weights: data, seed, time, accuracy, tau."""
    atomic_write_text(Path(save_dir) / "training_record.json", json.dumps(record, indent=2))

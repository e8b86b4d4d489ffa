"""Training checkpoints: a run folder's heads, LoRA adapter, optimizer and trainer state, written whole.

A checkpoint folder is what `MedusaModel.save_pretrained` writes (heads.safetensors, medusa_config.json, the
model card), plus `trainer.pt` (the trainer state and the optimizer's) and, in Medusa-2 (Cai et al., 2024,
Sec. 2.2.2), the PEFT adapter. Each is written atomically (a temporary folder, then a rename), so an
interrupted save never leaves half a checkpoint; `load_checkpoint` refuses a folder that holds other heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medusa_lib.files import atomic_dir, atomic_write_text
from medusa_lib.heads import CONFIG_NAME, MedusaModel, read_config


def save_checkpoint(mm: MedusaModel, directory: Path, state: dict, optimizer=None) -> None:
    """Write a whole checkpoint folder atomically: a fresh temporary folder, then a rename."""
    summary = {k: v for k, v in state.items() if k not in ("history", "sched")}
    with atomic_dir(directory) as tmp:
        mm.save_pretrained(tmp, extra={"training": summary})
        torch.save({"state": state, "optimizer": optimizer.state_dict() if optimizer else None}, tmp / "trainer.pt")
        if is_peft(mm.base):
            mm.base.save_pretrained(tmp / "adapter")


def load_checkpoint(mm: MedusaModel, directory: Path, optimizer=None) -> dict:
    """Restore heads (adapter, optimizer) from a checkpoint folder; returns the trainer state."""
    directory = Path(directory)
    saved = read_config(directory / CONFIG_NAME)  # an old config without "kind" reads as Medusa heads
    mine = mm.heads.config_dict()
    diff = [f"{k}={saved.get(k)} there, {v} here" for k, v in mine.items() if saved.get(k) != v]
    if diff:
        raise ValueError(f"cannot resume from {directory}: it holds other heads ({'; '.join(diff)}); "
                         f"use a new --save_dir, or --overwrite to start again")
    mm.load_weights(directory)
    if (directory / "adapter").exists() and is_peft(mm.base):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(mm.base, load_file(str(directory / "adapter" / "adapter_model.safetensors")))
    blob = torch.load(directory / "trainer.pt", weights_only=False)
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
    if resume and not (save_dir.is_dir() and any(save_dir.iterdir())):
        raise FileNotFoundError(f"nothing to resume: {save_dir} holds no run; drop --resume to start one")
    if save_dir.exists() and not save_dir.is_dir():
        raise NotADirectoryError(f"save_dir {save_dir} is a file; give a folder")
    if save_dir.exists() and any(save_dir.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"save_dir {save_dir} already holds a run; pass --resume to continue it, "
                              f"--overwrite to replace it, or choose another --save_dir")
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(save_dir / ".write-test", "ok")
        (save_dir / ".write-test").unlink()
    except OSError as e:
        raise PermissionError(f"save_dir {save_dir} is not writable: {e}") from e
    return save_dir


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def write_record(save_dir, record: dict) -> None:
    """training_record.json next to the weights: data, seed, time, accuracy, tau."""
    atomic_write_text(Path(save_dir) / "training_record.json", json.dumps(record, indent=2))

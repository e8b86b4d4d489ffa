"""Self-distillation training of Medusa heads (Cai et al., 2024, Sec. 2.2 and 2.3.2): the loops and the recipes.

Medusa-1 (`stage="heads"`, `train_heads`) freezes the backbone. Its last hidden states are computed
once and cached (`medusa_lib.positions`), so each epoch costs only the heads. Hydra heads (`kind="hydra"`,
Ankner et al., 2024) train the same way, teacher-forced. Medusa-2 (`stage="joint"`, `train_joint`) trains
LoRA adapters with the heads (Medusa heads only). Its base LM loss is KD against the teacher, which is
the same model with its adapters disabled, so the backbone's outputs stay close to the teacher's.

The losses (CE + KD per head, weighted by decay**k; the chunked Medusa-2 loss) live in `medusa_lib.losses`,
the checkpoint folders in `medusa_lib.checkpoints`. Memory: Medusa-1 backpropagates one head at a time,
Medusa-2 one chunk of positions at a time (see `medusa_lib.memory`). Precision: heads hold fp32 weights,
losses run in fp32, and an fp16 backbone gets a GradScaler.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, replace

import torch

from medusa_lib.checkpoints import check_save_dir, clear_run, is_peft, load_checkpoint, save_checkpoint
from medusa_lib.config import TrainConfig
from medusa_lib.decoding import context_of
from medusa_lib.files import run_lock, sigterm_as_interrupt
from medusa_lib.heads import MedusaModel
from medusa_lib.losses import bank_batch_loss, joint_loss
from medusa_lib.positions import PositionBank, bank_accuracy, check_rows, pad_batch, row_states

# ----------------------------------------------------------------------------- checks


def check_offsets(offsets, num_heads: int) -> None:
    if list(offsets) != list(range(1, num_heads + 1)):
        raise ValueError(f"offsets must be 1..K for K={num_heads} heads (e.g. 1 2 3), got {list(offsets)}")


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that would train nothing or silently do something else."""
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}: a run with no epoch saves no heads")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 (or unset), got {cfg.max_steps}")
    for name in ("batch_size", "block_size", "grad_accum"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not cfg.offsets or list(cfg.offsets) != list(range(1, len(cfg.offsets) + 1)):
        raise ValueError(f"offsets must be 1..K (e.g. 1 2 3), got {list(cfg.offsets)}")
    if cfg.stage not in ("heads", "joint"):
        raise ValueError(f"stage must be 'heads' or 'joint', got {cfg.stage!r}")
    check_weights(cfg)


def check_weights(cfg: TrainConfig) -> None:
    """Loss weights and rates that are numbers in range: a NaN or a negative weight trains garbage, saved as
    success."""
    ranges = {"kd_weight": (0.0, 1.0, "0 = hard CE only, 1 = KD only"), "decay": (1e-9, 1.0, "head k weighs decay**k"),
              "lr": (1e-12, 10.0, "a learning rate"), "head_lr_mult": (1e-9, 1e3, "a multiplier of lr")}
    for name, (lo, hi, what) in ranges.items():
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}] ({what}), got {value!r}")


# ----------------------------------------------------------------------------- Medusa-1


def train_heads(mm: MedusaModel, train_rows, eval_rows=None, cfg: TrainConfig | None = None, save_dir=None,
                resume: bool = False, overwrite: bool = False, callback=None, progress: bool = True) -> dict:
    """Medusa-1: frozen backbone, cached hidden states, heads trained with CE + KD.

    Checkpoints (best by held-out head-1 top-1, and last) are written atomically each epoch;
    `resume=True` continues from `save_dir/last` exactly where it stopped; `overwrite=True` removes the
    earlier run's checkpoints first. The folder is locked for the run, and Ctrl-C or SIGTERM saves last/
    before stopping (`RunInterrupted`, which says how to resume). Returns the state.
    """
    cfg = cfg or TrainConfig()
    check_config(cfg)
    check_offsets(cfg.offsets, mm.num_heads)
    save_dir = check_save_dir(save_dir, resume, overwrite)
    seqs = check_rows(train_rows, cfg.block_size, context_of(mm.config))
    with run_lock(save_dir) if save_dir is not None else contextlib.nullcontext(), sigterm_as_interrupt():
        if overwrite and save_dir is not None:
            clear_run(save_dir)
        return _train_heads(mm, seqs, train_rows, eval_rows, cfg, save_dir, resume, callback, progress)


class RunInterrupted(KeyboardInterrupt):
    """A training run stopped by Ctrl-C or SIGTERM after saving its last checkpoint; the message says how to
    go on."""


def _train_heads(mm, seqs, train_rows, eval_rows, cfg, save_dir, resume, callback, progress) -> dict:
    for p in mm.base.parameters():
        p.requires_grad_(False)
    t_bank = time.perf_counter()
    known = row_states(train_rows, cfg.block_size)  # states kept at generation need no backbone pass
    bank = PositionBank(mm, seqs, mm.num_heads, progress, known=known)  # one pass at most: every epoch reuses it
    del known
    bank_seconds = time.perf_counter() - t_bank
    eval_bank = _eval_bank(mm, eval_rows, cfg.block_size)
    opt = torch.optim.AdamW(mm.heads.parameters(), lr=cfg.lr, weight_decay=0.0)
    positions = bank.trainable()
    total = cfg.epochs * math.ceil(len(positions) / cfg.step_size())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total))
    state = _start_state(mm, cfg, positions, save_dir, resume, opt, sched)
    state["bank_seconds"] = bank_seconds  # what each epoch would cost again without the cache
    loop = _Loop(mm, bank, positions, cfg, opt, sched, state, callback, progress, total)
    try:
        loop.run(eval_bank, save_dir)
    except KeyboardInterrupt as e:
        if save_dir is None:
            raise
        state["seconds"] = loop.seconds()
        save_checkpoint(mm, save_dir / "last", state, opt)
        why = "SIGTERM" if "SIGTERM" in str(e) else "interrupted"
        raise RunInterrupted(f"{why} at step {state['step']} (epoch {state['epoch'] + 1}): {save_dir / 'last'} "
                             f"saved; run the same command with --resume to continue") from None
    state["seconds"] = loop.seconds()
    return state


def _start_state(mm, cfg, positions, save_dir, resume, opt, sched) -> dict:
    """A fresh trainer state, or the one saved in save_dir/last (checked against this run)."""
    state = {"epoch": 0, "batch": 0, "step": 0, "history": [], "evals": [], "best": -1.0, "seconds": 0.0,
             "positions": int(len(positions)), "config": asdict(cfg)}
    if resume and save_dir is not None and (save_dir / "last").exists():
        saved = load_checkpoint(mm, save_dir / "last", opt)
        if saved["positions"] != state["positions"] or list(saved["config"]["offsets"]) != list(cfg.offsets):
            raise ValueError(f"cannot resume from {save_dir / 'last'}: it was trained on {saved['positions']} "
                             f"positions with offsets {list(saved['config']['offsets'])}, this run has "
                             f"{state['positions']} with {list(cfg.offsets)}; use the same data, or --overwrite")
        check_same_schedule(saved["config"], cfg, save_dir / "last")
        state = saved
        sched.load_state_dict(state["sched"])
    state["sched"] = sched.state_dict()
    return state


RESUMABLE = ("max_steps",)  # the one setting a resumed run may change: where it stops


def check_same_schedule(saved: dict, cfg: TrainConfig, where) -> None:
    """Resuming needs the run's own settings: the same shuffle, batches and schedule (batch size, seed, epochs,
    lr) and the same loss (kd_weight, decay, ...). Only max_steps may change."""
    mine = asdict(cfg)
    saved = {**saved, "batch_size": TrainConfig(stage=saved.get("stage", "heads"),
                                                 batch_size=saved.get("batch_size")).step_size()}
    mine["batch_size"] = cfg.step_size()
    same = lambda a, b: list(a) == list(b) if isinstance(b, (list, tuple)) else a == b  # noqa: E731
    diff = [f"{k} {saved.get(k)} there, {mine[k]} here" for k in mine
            if k not in RESUMABLE and not same(saved.get(k), mine[k])]
    if diff:
        raise ValueError(f"cannot resume from {where}: {'; '.join(diff)}; resume with the same settings, "
                         f"or --overwrite to start again")


class _Loop:
    """The Medusa-1 epoch loop: shuffled position batches, evaluation and checkpoints per epoch."""

    def __init__(self, mm, bank, positions, cfg, opt, sched, state, callback, progress, total):
        from tqdm.auto import tqdm

        self.mm, self.bank, self.positions, self.cfg = mm, bank, positions, cfg
        self.opt, self.sched, self.state, self.callback = opt, sched, state, callback
        self.bar = tqdm(total=total, initial=state["step"], desc="train heads", disable=not progress)
        self.t0 = time.perf_counter() - state["seconds"]

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def done(self) -> bool:
        cfg, state = self.cfg, self.state
        return state["epoch"] >= cfg.epochs or (cfg.max_steps is not None and state["step"] >= cfg.max_steps)

    def run(self, eval_bank, save_dir) -> None:
        while not self.done():
            self.epoch()
            if self.state["batch"] == 0:  # the epoch finished
                self.end_epoch(eval_bank, save_dir)
        if self.state["batch"] != 0 and save_dir is not None:  # stopped by max_steps mid-epoch
            self.end_epoch(eval_bank, save_dir)
        self.bar.close()

    def epoch(self) -> None:
        cfg, state = self.cfg, self.state
        g = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"])
        batches = self.positions[torch.randperm(len(self.positions), generator=g)].split(cfg.step_size())
        self.mm.heads.train()
        for b in range(state["batch"], len(batches)):
            if self.done():
                return
            self.step(batches[b], b)
        state["epoch"] += 1
        state["batch"] = 0

    def step(self, pos, b: int) -> None:
        state = self.state
        self.opt.zero_grad(set_to_none=True)
        losses = bank_batch_loss(self.mm, self.bank, pos, self.cfg)
        self.opt.step()
        self.sched.step()
        state.update(sched=self.sched.state_dict(), step=state["step"] + 1, batch=b + 1)
        event = {"step": state["step"], "epoch": state["epoch"], "loss": sum(losses), "head_losses": losses}
        state["history"].append(event)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{sum(losses):.3f}")
        if self.callback is not None:
            self.callback(event)

    def end_epoch(self, eval_bank, save_dir) -> None:
        state = self.state
        state["seconds"] = self.seconds()
        if eval_bank is not None:
            acc = bank_accuracy(self.mm, eval_bank, topk=5)
            event = {"epoch": state["epoch"], "eval": True, "top1": acc[:, 0].tolist(), "top5": acc[:, 4].tolist()}
            state["evals"].append(event)
            if self.callback is not None:
                self.callback(event)
            if save_dir is not None and acc[0, 0] > state["best"]:
                save_checkpoint(self.mm, save_dir / "best", {**state, "best": float(acc[0, 0])}, self.opt)
                state["best"] = float(acc[0, 0])  # only once best/ holds these heads
        if save_dir is not None:
            save_checkpoint(self.mm, save_dir / "last", state, self.opt)


def _eval_bank(mm, rows, block_size: int):
    """Held-out positions to score each epoch; None (with a note) when there are none."""
    if not rows:
        return None
    try:
        return PositionBank(mm, check_rows(rows, block_size), mm.num_heads)
    except ValueError as e:
        print(f"no held-out evaluation: {e}")
        return None


def _cosine(step: int, total: int, warmup: int = 20) -> float:
    warmup = min(warmup, max(1, total // 10))  # short runs must not spend themselves warming up
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


# ----------------------------------------------------------------------------- Medusa-2


def add_lora(model, cfg: TrainConfig | None = None, qlora: bool = False):
    """Wrap a causal LM with LoRA adapters on every linear of the decoder (QLoRA: k-bit prep), with
    gradient checkpointing (non-reentrant) either way: without it Medusa-2 keeps every layer's activations
    (about 22 GiB for the t4 profile's 8 x 1024 batch; see `medusa_lib.memory`).

    PEFT keeps the adapter weights in fp32 even on an fp16 backbone (`autocast_adapter_dtype`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    cfg = cfg or TrainConfig(stage="joint")
    checkpointing = {"use_reentrant": False}
    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=checkpointing)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)  # non-reentrant: the
        # frozen embeddings' output needs no requires_grad hook for gradients to reach the adapters
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def train_joint(mm: MedusaModel, train_rows, cfg: TrainConfig | None = None, callback=None,
                progress: bool = True) -> dict:
    """Medusa-2: heads warmed alone for `warmup_head_steps`, then heads + LoRA together.

    `mm.base` must be a PEFT model (see `add_lora`). Heads learn at lr * head_lr_mult. Each optimizer
    step accumulates `grad_accum` micro-batches of `batch_size` sequences; fp16 uses a GradScaler.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig(stage="joint")
    check_config(cfg)
    check_joint(mm)
    check_offsets(cfg.offsets, mm.num_heads)
    seqs = check_rows(train_rows, cfg.block_size, context_of(mm.config))
    if cfg.warmup_head_steps > 0:
        train_heads(mm, train_rows, cfg=replace(cfg, stage="heads", epochs=1, batch_size=None,
                                               max_steps=cfg.warmup_head_steps), progress=progress)
    opt, scaler = _joint_optimizer(mm, cfg)
    steps = cfg.max_steps or cfg.epochs * math.ceil(len(seqs) / (cfg.step_size() * cfg.grad_accum))
    history, g = [], torch.Generator().manual_seed(cfg.seed)
    mm.train()
    for step in tqdm(range(steps), desc="train joint", disable=not progress):
        opt.zero_grad(set_to_none=True)
        loss, parts = 0.0, [0.0] * (mm.num_heads + 1)
        for _ in range(cfg.grad_accum):
            batch = [seqs[i] for i in torch.randint(len(seqs), (cfg.step_size(),), generator=g).tolist()]
            ids, attn, start = pad_batch(batch, mm.config.pad_token_id or 0, mm.lm_head.weight.device)
            micro, micro_parts = joint_loss(mm, ids, attn, start, cfg, scaler=scaler, accum=cfg.grad_accum)
            loss += micro / cfg.grad_accum
            parts = [a + b / cfg.grad_accum for a, b in zip(parts, micro_parts)]
        scaler.step(opt)
        scaler.update()
        event = {"step": step + 1, "loss": loss, "lm_kd": parts[0], "head_losses": parts[1:]}
        history.append(event)
        if callback is not None:
            callback(event)
    mm.eval()
    return {"history": history}


def check_joint(mm: MedusaModel) -> None:
    """Medusa-2 needs LoRA adapters on the base, and Medusa heads (Hydra heads train in Medusa-1 only)."""
    if not is_peft(mm.base):
        raise TypeError("train_joint needs LoRA adapters on the base: MedusaModel.from_base(add_lora(model), ...)")
    if mm.heads.reads_path:
        raise ValueError(f"train_joint (Medusa-2) trains Medusa heads only; these are {mm.kind} heads: "
                         f"train them with train_heads (Medusa-1, frozen backbone)")


def _joint_optimizer(mm: MedusaModel, cfg: TrainConfig):
    """AdamW over LoRA (lr) and heads (lr * head_lr_mult); a GradScaler when the backbone is fp16."""
    lora = [p for n, p in mm.base.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": lora, "lr": cfg.lr},
                             {"params": mm.heads.parameters(), "lr": cfg.lr * cfg.head_lr_mult}])
    device = mm.lm_head.weight.device.type
    return opt, torch.amp.GradScaler(device, enabled=compute_dtype(mm.base) == torch.float16)


def compute_dtype(model) -> torch.dtype:
    """The dtype the backbone computes in: a 4-bit model's `bnb_4bit_compute_dtype` (PEFT's k-bit prep
    casts lm_head to fp32, but the layers still run in it), else the lm_head's dtype."""
    qc = getattr(model.config, "quantization_config", None)
    dtype = qc.get("bnb_4bit_compute_dtype") if isinstance(qc, dict) else getattr(qc, "bnb_4bit_compute_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return dtype or model.get_output_embeddings().weight.dtype

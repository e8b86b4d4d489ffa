"""Self-distillation training of Medusa heads (Cai et al., 2024, Sec. 2.2 and 2.3.2).

Head k (1-based) at position t learns the token at t+k+1. Two losses per head, mixed by
`kd_weight` and weighted by decay**k (the paper's 0.8^k):

- CE: cross-entropy against the base model's own greedy token at t+k+1 given the sequence
  so far (on self-distilled greedy data, simply the token at t+k+1);
- KD: KL(teacher || head), the teacher being the base model's distribution at position t+k,
  i.e. the distribution that token t+k+1 comes from.

Hydra heads (`kind="hydra"`, Ankner et al., 2024) train the same way in Medusa-1, teacher-forced:
head k (0-based) at t also reads the embeddings of the real tokens t+1 .. t+k+1. Medusa-2 is Medusa
heads only.

Medusa-1 (`stage="heads"`) freezes the backbone. Its last hidden states are computed once and
cached (`medusa_lib.positions`), so each epoch costs only the heads. Medusa-2 (`stage="joint"`)
trains LoRA adapters with the heads. Its base LM loss is KD against the teacher, which is the same
model with its adapters disabled, so the backbone's outputs stay close to the teacher's.

Memory: Medusa-1 backpropagates one head at a time. Medusa-2 runs the backbone once, then computes
every loss term (base LM and each head) in chunks of positions, each chunk backpropagated into
the detached last hidden state before the next is built; one backward through the backbone
follows. The peak then holds one chunk's logits, not [B, T, V] per head (see `medusa_lib.memory`).
Precision: heads hold fp32 weights, losses run in fp32, and an fp16 backbone gets a GradScaler.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from medusa_lib.config import TrainConfig, smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data
from medusa_lib.files import atomic_dir, atomic_write_text
from medusa_lib.heads import CONFIG_NAME, MedusaModel, read_config
from medusa_lib.memory import backbone_params, backbone_shapes, memory_budget  # noqa: F401 (notebooks 02, 03)
from medusa_lib.positions import PositionBank, bank_accuracy, check_rows, row_states

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


# ----------------------------------------------------------------------------- losses


def head_loss(student_logits, target_ids, teacher_logits, kd_weight: float, mask=None):
    """CE + KD for one head, in fp32: logits [B, V], targets [B], teacher [B, V]; mask [B] bool."""
    if mask is not None:
        student_logits, target_ids, teacher_logits = student_logits[mask], target_ids[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    logp = F.log_softmax(student_logits.float(), -1)
    ce = F.nll_loss(logp, target_ids)
    if kd_weight == 0:
        return ce
    teacher = F.log_softmax(teacher_logits.float(), -1)
    kd = F.kl_div(logp, teacher, log_target=True, reduction="batchmean")
    return (1 - kd_weight) * ce + kd_weight * kd


def draft_projection(mm: MedusaModel, k: int):
    """Head k's projection weight [V', H] and the token id of each row (None = full vocab)."""
    weight = mm.lm_head.weight if mm.heads.lm_heads is None else mm.heads.lm_heads[k].weight
    if mm.draft_ids is None:
        return weight, None
    if not weight.requires_grad:  # a frozen (shared) projection: its draft rows are cached once
        return mm.draft_weight(k), mm.draft_ids
    return weight[mm.draft_ids], mm.draft_ids


def teacher_rows(mm: MedusaModel):
    """The base lm_head's rows that the heads rank: the draft rows, or the whole vocabulary."""
    if mm.draft_ids is None:
        return mm.lm_head.weight
    return mm.draft_weight(0) if mm.heads.lm_heads is None else mm.lm_head.weight[mm.draft_ids].detach()


def to_draft(target_ids, draft_ids, vocab_size: int):
    """Map target token ids to draft-vocab rows; returns (rows, mask of targets in the draft)."""
    where = torch.full((vocab_size,), -1, dtype=torch.long, device=target_ids.device)
    where[draft_ids] = torch.arange(len(draft_ids), device=target_ids.device)
    mapped = where[target_ids]
    return mapped.clamp(min=0), mapped >= 0


def head_term(mm: MedusaModel, k: int, h, target, teacher_h, mask, cfg: TrainConfig, prev=None):
    """Head k's weighted loss on hidden states h [B, H] (fp32 math, draft rows where set).

    Hydra heads also read `prev` [B, k+1], the ids of the tokens before the one they guess."""
    weight, draft = draft_projection(mm, k)
    with torch.no_grad():  # the teacher's distribution at t+k, over the same rows as the student
        W = teacher_rows(mm)
        teacher = teacher_h.to(W.device, W.dtype) @ W.T  # [B, V']
    if draft is not None:
        target, in_draft = to_draft(target, draft, mm.heads.vocab_size)
        mask = mask & in_draft
    z = mm.heads.block(h, k) if prev is None else mm.hydra_state(h, k, prev)  # [B, H]
    if weight.requires_grad:  # trainable projections keep fp32 weights: no copy
        student = z.float() @ weight.T.float()  # [B, V']
    else:  # a frozen (fp16) lm_head is read in its own dtype, not copied to fp32 on every call
        student = (z.to(weight.dtype) @ weight.T).float()  # [B, V']
    return cfg.decay ** (k + 1) * head_loss(student, target, teacher, cfg.kd_weight, mask)


def bank_batch_loss(mm: MedusaModel, bank: PositionBank, pos: torch.Tensor, cfg: TrainConfig,
                    backward: bool = True) -> list[float]:
    """Medusa-1 loss on positions `pos` of a PositionBank; backward one head at a time (Hydra: teacher-forced)."""
    dev = mm.lm_head.weight.device
    h = bank.inputs(pos, dev)  # [B, H] fp32
    losses = []
    for k in range(mm.num_heads):
        target, mask = bank.target(pos, k)
        prev = bank.path_ids(pos, k) if mm.kind == "hydra" else None  # teacher forcing: tokens t+1 .. t+k+1
        loss = head_term(mm, k, h, target.to(dev), bank.teacher_state(pos, k), mask.to(dev), cfg, prev)
        if backward and loss.requires_grad:
            loss.backward()
        losses.append(float(loss.detach()))
    return losses


# ----------------------------------------------------------------------------- checkpoints


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


# ----------------------------------------------------------------------------- Medusa-1


def train_heads(mm: MedusaModel, train_rows, eval_rows=None, cfg: TrainConfig | None = None, save_dir=None,
                resume: bool = False, overwrite: bool = False, callback=None, progress: bool = True) -> dict:
    """Medusa-1: frozen backbone, cached hidden states, heads trained with CE + KD.

    Checkpoints (best by held-out head-1 top-1, and last) are written atomically each epoch;
    `resume=True` continues from `save_dir/last` exactly where it stopped. Returns the state.
    """
    cfg = cfg or TrainConfig()
    check_config(cfg)
    check_offsets(cfg.offsets, mm.num_heads)
    save_dir = check_save_dir(save_dir, resume, overwrite)
    seqs = check_rows(train_rows, cfg.block_size, getattr(mm.config, "max_position_embeddings", None))
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
    except KeyboardInterrupt:
        if save_dir is not None:
            state["seconds"] = loop.seconds()
            save_checkpoint(mm, save_dir / "last", state, opt)
        raise
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


def check_same_schedule(saved: dict, cfg: TrainConfig, where) -> None:
    """Resuming mid-epoch needs the same shuffle, batches and schedule: batch size, seed, epochs, lr."""
    mine = asdict(cfg)
    saved = {**saved, "batch_size": TrainConfig(stage=saved.get("stage", "heads"),
                                                 batch_size=saved.get("batch_size")).step_size()}
    mine["batch_size"] = cfg.step_size()
    diff = [f"{k} {saved.get(k)} there, {mine[k]} here" for k in ("batch_size", "seed", "epochs", "lr")
            if saved.get(k) != mine[k]]
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


def joint_loss(mm: MedusaModel, ids, attn, start, cfg: TrainConfig, chunk: int = 1024, backward: bool = True,
               scaler=None, accum: int = 1) -> tuple[float, list[float]]:
    """Medusa-2 loss on a padded batch ids [B, T]: KD of the base LM to the teacher + every head.

    The teacher is the same model with its adapters disabled (no KV cache is built). Every term is
    computed in chunks of `chunk` positions, each backpropagated (divided by `accum`, scaled by an
    fp16 GradScaler if given) into the detached last hidden state at once; then one backward runs
    through the backbone. Returns (loss, per-term floats).
    """
    with torch.no_grad(), mm.base.disable_adapter():
        teacher_h = mm.decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [B, T, H]
    h = mm.decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [B, T, H]
    leaf = h.detach().requires_grad_(backward)
    parts = []
    for p in range(mm.num_heads + 1):  # p = 0: the base LM at t+1; p = k+1: head k at t+k+2
        where = joint_positions(attn, start, p)
        parts.append(_joint_term(mm, p, leaf, teacher_h, ids, where, cfg, chunk, backward, scaler, accum))
    if backward and leaf.grad is not None:
        h.backward(leaf.grad)
    return sum(parts), parts


def joint_positions(attn, start, p: int) -> torch.Tensor:
    """Flat indices into [B, T] of the positions t whose target t+p+1 is a real token of the same row
    (right padding: a row's length is its mask's sum), from each row's `start` on."""
    T = attn.shape[1]
    t = torch.arange(T, device=attn.device)[None]  # [1, T]
    ok = attn.bool() & (t >= start[:, None]) & (t + p + 1 < attn.sum(1, keepdim=True))  # [B, T]
    return ok.flatten().nonzero().squeeze(1)


def _joint_term(mm, p, leaf, teacher_h, ids, where, cfg, chunk, backward, scaler, accum) -> float:
    """One term of the joint loss (the base LM when p = 0, else head p-1), chunk by chunk."""
    flat_h, flat_t, flat_ids = leaf.flatten(0, 1), teacher_h.flatten(0, 1), ids.flatten()
    total = 0.0
    for c in where.split(chunk):
        share = len(c) / max(1, len(where))  # chunks add up to the mean over all positions
        target = flat_ids[c + p + 1]
        if p == 0:
            with torch.no_grad():
                teacher = mm.lm_head(flat_t[c]).float()  # [n, V]
            loss = head_loss(mm.lm_head(flat_h[c]), target, teacher, 1.0) * share
        else:
            mask = torch.ones_like(c, dtype=torch.bool)
            loss = head_term(mm, p - 1, flat_h[c], target, flat_t[c + p], mask, cfg) * share
        if backward and loss.requires_grad:
            scaled = loss / accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += float(loss.detach())
    return total


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
    seqs = check_rows(train_rows, cfg.block_size, getattr(mm.config, "max_position_embeddings", None))
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
            ids, attn, start = _pad(batch, mm.config.pad_token_id or 0, mm.lm_head.weight.device)
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
    if mm.kind != "medusa":
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


def _pad(batch, pad_id: int, device):
    """Right-pad [(ids, start)] into ids [B, T], attention mask [B, T], starts [B]."""
    T = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    attn = torch.zeros(len(batch), T, dtype=torch.long)
    for i, (seq, _) in enumerate(batch):
        ids[i, : len(seq)], attn[i, : len(seq)] = seq, 1
    return ids.to(device), attn.to(device), torch.tensor([s for _, s in batch], device=device)


@torch.no_grad()
def kl_to_teacher(mm: MedusaModel, rows, block_size: int = 512) -> float:
    """Mean KL(teacher || adapted model) of the base LM over response positions of `rows`."""
    total, n = 0.0, 0
    for ids, start in check_rows(rows, block_size):
        ids = ids[None].to(mm.lm_head.weight.device)
        h = mm.decoder(input_ids=ids, use_cache=False).last_hidden_state  # [1, T, H]; no KV cache is built
        student = F.log_softmax(mm.lm_head(h)[0, start:].float(), -1)
        with mm.base.disable_adapter():
            h = mm.decoder(input_ids=ids, use_cache=False).last_hidden_state  # [1, T, H]
            teacher = F.log_softmax(mm.lm_head(h)[0, start:].float(), -1)
        total += float(F.kl_div(student, teacher, log_target=True, reduction="sum"))
        n += student.shape[0]
    return total / max(1, n)


# ----------------------------------------------------------------------------- the quick recipe


def fresh_heads(model, rows, eval_rows=None, epochs: int = 2, num_heads: int = 3, draft=8192, save_dir=None,
                seed: int = 0, progress: bool = True, kind: str = "medusa") -> tuple[MedusaModel, dict]:
    """The shipped recipe on given rows: fresh heads (1 ResBlock each, shared lm_head), a draft
    vocabulary (`draft`: a size, or the token ids), Medusa-1. `kind`: "medusa" or "hydra" heads.
    Returns (heads, trainer state)."""
    mm = MedusaModel.from_base(model, num_heads, share_lm_head=True, kind=kind)
    if isinstance(draft, int) and draft:
        draft = draft_vocab(rows, draft, model.config.vocab_size)
    if draft is not None and not isinstance(draft, int):
        mm.set_draft_vocab(draft)
    cfg = TrainConfig(epochs=epochs, offsets=tuple(range(1, num_heads + 1)), seed=seed)
    state = train_heads(mm, rows, eval_rows, cfg=cfg, save_dir=save_dir, overwrite=True, progress=progress)
    return mm, state


def quick_heads(model, tok, n_prompts: int | None = None, max_new_tokens: int | None = None,
                epochs: int | None = None, save_dir=None, progress: bool = True) -> tuple[MedusaModel, dict]:
    """A small set of heads trained in a few minutes on a CPU, for notebooks without heads and
    `demo --train`: self-distil `n_prompts` training prompts (cached on disk), then `fresh_heads`."""
    n_prompts, max_new_tokens = n_prompts or smoke(40, 4), max_new_tokens or smoke(128, 16)
    prompts = [p.prompt for p in load_prompts("train")[:n_prompts]]
    rows = self_distill_data(model, tok, prompts, max_new_tokens, batch_size=16, progress=progress)
    return fresh_heads(model, rows, epochs=epochs or smoke(3, 1), save_dir=save_dir, progress=progress)

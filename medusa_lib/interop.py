"""Heads in and out: vLLM and FasterDecoding/Medusa layouts, finding heads for a model, hub upload.

Every layout holds the same numbers, only the names differ. For head h and ResBlock l (of L):

    ours (heads.safetensors)        vLLM (model.safetensors)      FasterDecoding (medusa_lm_head.pt)
    blocks.{h}.{l}.linear.weight    blocks.{h}.layers.{l}.weight  {h}.{l}.linear.weight   [H, H]
    blocks.{h}.{l}.linear.bias      blocks.{h}.layers.{l}.bias    {h}.{l}.linear.bias     [H]
    lm_heads.{h}.weight             lm_heads.{h}.weight           {h}.{L}.weight          [V, H]

vLLM's `Medusa` model (vllm/model_executor/models/medusa.py) reads `config.json` with
model_type "medusa"; FasterDecoding's `MedusaModel` reads `medusa_num_heads`/`medusa_num_layers`.
Both compute x + SiLU(W x + b) per layer, like our ResBlock. A draft vocabulary (which neither
format knows) travels as an extra `draft_ids.pt` that `load_heads` restores, so a round trip
through either layout gives the same heads, drafting the same tokens. Hydra heads have no
vLLM or FasterDecoding layout: `export_heads` refuses them.

Which drafter a command or notebook uses is decided in one place: `recipes.resolve_heads`.

    python -m medusa_lib.export --heads runs/heads --format vllm --out exports/vllm
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from medusa_lib.files import atomic_dir, atomic_write_text, read_tensors
from medusa_lib.heads import (
    CONFIG_NAME,
    DRAFT_NAME,
    MedusaModel,
    model_card,
    read_config,
    read_draft_ids,
)

FORMATS = ("vllm", "medusa")
VLLM_WEIGHTS = "model.safetensors"
MEDUSA_WEIGHTS = "medusa_lm_head.pt"
MEDUSA_WEIGHTS_ST = "medusa_lm_head.safetensors"

# ----------------------------------------------------------------------------- names


def key_map(num_heads: int, num_layers: int, format: str) -> dict[str, str]:
    """Foreign key -> our key (the share_lm_head=False layout), for every tensor of the checkpoint."""
    names = {}
    for h in range(num_heads):
        for layer in range(num_layers):
            for kind in ("weight", "bias"):
                ours = f"blocks.{h}.{layer}.linear.{kind}"
                if format == "vllm":
                    names[f"blocks.{h}.layers.{layer}.{kind}"] = ours
                else:
                    names[f"{h}.{layer}.linear.{kind}"] = ours
        proj = f"lm_heads.{h}.weight" if format == "vllm" else f"{h}.{num_layers}.weight"
        names[proj] = f"lm_heads.{h}.weight"
    return names


def unshared_state(mm: MedusaModel) -> dict[str, torch.Tensor]:
    """Our heads' tensors on the CPU, with one `lm_heads.{h}.weight` [V, H] per head even when shared.

    Each head gets its own clone: safetensors refuses tensors that share memory.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in mm.heads.state_dict().items()}
    if mm.heads.lm_heads is None:
        base_w = mm.lm_head.weight.detach().cpu().contiguous()  # [V, H]
        for h in range(mm.heads.num_heads):
            state[f"lm_heads.{h}.weight"] = base_w.clone()
    return state


# ----------------------------------------------------------------------------- export


def vllm_config(mm: MedusaModel) -> dict:
    """vLLM's MedusaConfig. `medusa_fc_bias` makes vLLM build (and load) the ResBlocks' bias."""
    heads = mm.heads
    cfg = {"model_type": "medusa", "architectures": ["MedusaModel"], "hidden_size": heads.hidden_size,
           "vocab_size": heads.vocab_size, "num_heads": heads.num_heads, "num_hidden_layers": heads.num_layers,
           "medusa_fc_bias": True, "truncated_vocab_size": heads.vocab_size,
           "base_model_name_or_path": mm.base_name}
    if heads.share_lm_head:
        cfg["original_lm_head"] = True  # newer vLLM then keeps one lm_head (lm_heads.0) in memory
    return cfg


def medusa_config(mm: MedusaModel) -> dict:
    """FasterDecoding/Medusa's MedusaConfig."""
    return {"medusa_num_heads": mm.heads.num_heads, "medusa_num_layers": mm.heads.num_layers,
            "base_model_name_or_path": mm.base_name}


def check_exportable(mm: MedusaModel) -> None:
    """Only Medusa heads have a vLLM or FasterDecoding layout: Hydra heads also read draft tokens."""
    if mm.heads.reads_path:
        raise ValueError("vLLM and FasterDecoding load Medusa heads only; these are Hydra heads (each head also "
                         "reads the draft tokens before it), which neither can run. Keep them in medusa_lib's "
                         "own format (MedusaModel.save_pretrained) and decode with medusa_generate")


def export_heads(mm: MedusaModel, directory, format: str = "vllm", info: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Write `mm`'s heads in vLLM's or FasterDecoding's layout, plus config.json and a README.md card.

    The folder is written whole (a temporary folder, then a rename), so no stale file of an earlier
    export survives; a non-empty folder is refused unless `overwrite=True`. With share_lm_head=True
    the base lm_head weight is written once per head: vLLM's Medusa model loads one lm_head per head
    (`lm_heads.{h}.weight`); only recent versions know `original_lm_head`, which we also set.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    check_exportable(mm)
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not overwrite:
        raise FileExistsError(f"{directory} is not an empty folder; choose another --out or pass --overwrite")
    state = unshared_state(mm)
    foreign = {fk: state[ok] for fk, ok in key_map(mm.heads.num_heads, mm.heads.num_layers, format).items()}
    with atomic_dir(directory) as tmp:
        if format == "vllm":
            save_file(foreign, str(tmp / VLLM_WEIGHTS))
        else:
            torch.save(foreign, tmp / MEDUSA_WEIGHTS)
        cfg = vllm_config(mm) if format == "vllm" else medusa_config(mm)
        atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=2))
        if mm.draft_ids is not None:  # neither format knows it; our loader restores it
            torch.save(mm.draft_ids.cpu(), tmp / DRAFT_NAME)
        atomic_write_text(tmp / "README.md", model_card(mm, {**(info or {}), "format": format}))
    return directory


# ----------------------------------------------------------------------------- import


def foreign_format(directory) -> str | None:
    """"medusa" (FasterDecoding), "vllm" (config.json with model_type "medusa"), or None."""
    directory = Path(directory)
    if (directory / MEDUSA_WEIGHTS).exists() or (directory / MEDUSA_WEIGHTS_ST).exists():
        return "medusa"
    config = directory / "config.json"
    if config.exists() and read_config(config, foreign=True).get("model_type") == "medusa":
        return "vllm"
    return None


def load_foreign_heads(directory, base) -> MedusaModel:
    """Load FasterDecoding/Medusa or vLLM Medusa heads onto `base`; projections that copy the base
    lm_head (our shared-head exports) are shared again, so the round trip is exact in memory too."""
    directory = Path(directory)
    format = foreign_format(directory)
    if format is None:
        raise FileNotFoundError(f"{directory} holds neither {MEDUSA_WEIGHTS} nor a config.json with "
                                f"model_type 'medusa'")
    cfg = read_config(directory / "config.json", foreign=True)
    num_heads, num_layers = _sizes(cfg, format, directory)
    state, source = _read_weights(directory, format)
    names = key_map(num_heads, num_layers, format)
    expected = MedusaModel.from_base(base, num_heads, num_layers, share_lm_head=False).heads.state_dict()
    check_state(state, {fk: expected[ok].shape for fk, ok in names.items()}, source)
    shared = _copies_base_lm_head(state, names, base)  # exported from shared heads: share again
    mm = MedusaModel.from_base(base, num_heads, num_layers, share_lm_head=shared)
    mm.heads.load_state_dict({ok: state[fk] for fk, ok in names.items() if ok in mm.heads.state_dict()})
    mm.base_name = cfg.get("base_model_name_or_path") or mm.base_name
    if (directory / DRAFT_NAME).exists():  # written by export_heads: the draft vocabulary round-trips
        mm.set_draft_vocab(read_draft_ids(directory / DRAFT_NAME, mm.heads.vocab_size))
    return mm


def _copies_base_lm_head(state: dict, names: dict, base) -> bool:
    """True when every head's projection is an exact copy of the base lm_head (a shared export)."""
    W = base.get_output_embeddings().weight.detach().cpu()
    projs = [fk for fk, ok in names.items() if ok.startswith("lm_heads.")]
    return all(torch.equal(state[fk].to(W.dtype), W) for fk in projs)


def check_state(state: dict, shapes: dict, source: str) -> None:
    """Every key present with the shape the base model needs, and nothing else; errors name the key."""
    for key, shape in shapes.items():
        if key not in state:
            raise KeyError(f"{source}: key {key!r} is missing (the base model needs shape {list(shape)})")
        if tuple(state[key].shape) != tuple(shape):
            raise ValueError(f"{source}: key {key!r} has shape {list(state[key].shape)} "
                             f"but the base model needs {list(shape)}")
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise KeyError(f"{source}: unexpected keys {extra[:5]} (config and weights disagree on heads or layers)")


def _sizes(cfg: dict, format: str, directory: Path) -> tuple[int, int]:
    """(num_heads, num_layers) from either config's key names."""
    heads_key, layers_key = "medusa_num_heads", "medusa_num_layers"
    if format == "vllm":
        heads_key, layers_key = "num_heads", "num_hidden_layers"
    for key in (heads_key, layers_key):
        if key not in cfg:
            raise KeyError(f"{directory / 'config.json'}: no {key!r}")
    if format == "vllm" and cfg.get("truncated_vocab_size", cfg.get("vocab_size")) != cfg.get("vocab_size"):
        raise ValueError(f"{directory}: truncated_vocab_size (token_map) checkpoints are not supported; "
                         f"use MedusaModel.set_draft_vocab on a full-vocabulary checkpoint instead")
    return int(cfg[heads_key]), int(cfg[layers_key])


def _read_weights(directory: Path, format: str) -> tuple[dict, str]:
    """(state dict, file name for error messages); a 'medusa_head(s).' prefix is dropped."""
    if format == "vllm":
        path = directory / VLLM_WEIGHTS
    elif (directory / MEDUSA_WEIGHTS).exists():
        path = directory / MEDUSA_WEIGHTS
    else:
        path = directory / MEDUSA_WEIGHTS_ST
    state = read_tensors(path, "export the heads again, or download them again")
    return {_strip_prefix(k): v for k, v in state.items()}, path.name


def _strip_prefix(key: str) -> str:
    for prefix in ("medusa_heads.", "medusa_head."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# ----------------------------------------------------------------------------- finding heads


def load_heads(directory, base) -> MedusaModel:
    """Heads from a folder in any layout: ours (`save_pretrained`), vLLM or FasterDecoding."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"heads folder {directory} does not exist" if not directory.exists()
                                else f"{directory} is a file; give the heads folder that holds {CONFIG_NAME}")
    if (directory / CONFIG_NAME).exists():
        return MedusaModel.from_pretrained(directory, base=base)
    if foreign_format(directory) is not None:
        return load_foreign_heads(directory, base)
    raise FileNotFoundError(f"{directory} holds no heads: no {CONFIG_NAME} (medusa_lib), no {MEDUSA_WEIGHTS} "
                            f"(FasterDecoding) and no config.json with model_type 'medusa' (vLLM)")


# ----------------------------------------------------------------------------- hub


def push_to_hub(directory, repo_id: str, token: str | None = None):
    """Create `repo_id` (if needed) and upload the folder. Needs network and a write token."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    return api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model")



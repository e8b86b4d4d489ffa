"""Portable Medusa heads: export to vLLM and FasterDecoding/Medusa, import back, model cards, hub upload.

Every layout holds the same numbers, only the names differ. For head h and ResBlock l (of L):

    ours (heads.safetensors)        vLLM (model.safetensors)      FasterDecoding (medusa_lm_head.pt)
    blocks.{h}.{l}.linear.weight    blocks.{h}.layers.{l}.weight  {h}.{l}.linear.weight   [H, H]
    blocks.{h}.{l}.linear.bias      blocks.{h}.layers.{l}.bias    {h}.{l}.linear.bias     [H]
    lm_heads.{h}.weight             lm_heads.{h}.weight           {h}.{L}.weight          [V, H]

vLLM's `Medusa` model (vllm/model_executor/models/medusa.py) reads `config.json` with
model_type "medusa"; FasterDecoding's `MedusaModel` reads `medusa_num_heads`/`medusa_num_layers`.
Both compute x + SiLU(W x + b) per layer, like our ResBlock, so a round trip is exact.

    python -m medusa_lib.export --heads runs/heads --format vllm --out exports/vllm
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medusa_lib.data import atomic_write_bytes
from medusa_lib.heads import CONFIG_NAME, MedusaModel
from medusa_lib.models import EMBEDDED_NAME, load_base

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


def export_heads(mm: MedusaModel, directory, format: str = "vllm", info: dict | None = None) -> Path:
    """Write `mm`'s heads in vLLM's or FasterDecoding's layout, plus config.json and a README.md card.

    With share_lm_head=True the base lm_head weight is written once per head. vLLM's Medusa
    model loads one lm_head per head (`lm_heads.{h}.weight`); only recent versions know
    `original_lm_head`, which we also set. Writing copies keeps the checkpoint loadable by any
    vLLM with Medusa and by FasterDecoding, at the cost of size (SmolLM2: 113 MB fp32 per head).
    vLLM builds the ResBlock bias only when `medusa_fc_bias` is known (versions that predate it
    drop the bias, which lowers acceptance but never changes the verified output).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = unshared_state(mm)
    foreign = {fk: state[ok] for fk, ok in key_map(mm.heads.num_heads, mm.heads.num_layers, format).items()}
    if format == "vllm":
        _atomic(directory / VLLM_WEIGHTS, lambda tmp: save_file(foreign, str(tmp)))
        cfg = vllm_config(mm)
    else:
        _atomic(directory / MEDUSA_WEIGHTS, lambda tmp: torch.save(foreign, tmp))
        cfg = medusa_config(mm)
    atomic_write_bytes(directory / "config.json", json.dumps(cfg, indent=2).encode())
    card = model_card(mm, {**(info or {}), "format": format})
    atomic_write_bytes(directory / "README.md", card.encode())
    return directory


def _atomic(path: Path, write) -> None:
    """write(tmp) to a temp file next to `path`, then rename it over `path`."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- import


def foreign_format(directory) -> str | None:
    """"medusa" (FasterDecoding), "vllm" (config.json with model_type "medusa"), or None."""
    directory = Path(directory)
    if (directory / MEDUSA_WEIGHTS).exists() or (directory / MEDUSA_WEIGHTS_ST).exists():
        return "medusa"
    config = directory / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "medusa":
        return "vllm"
    return None


def load_foreign_heads(directory, base) -> MedusaModel:
    """Load FasterDecoding/Medusa or vLLM Medusa heads onto `base` (always share_lm_head=False)."""
    directory = Path(directory)
    format = foreign_format(directory)
    if format is None:
        raise FileNotFoundError(f"{directory} holds neither {MEDUSA_WEIGHTS} nor a config.json with "
                                f"model_type 'medusa'")
    cfg = _read_config(directory)
    num_heads, num_layers = _sizes(cfg, format, directory)
    state, source = _read_weights(directory, format)
    mm = MedusaModel.from_base(base, num_heads, num_layers, share_lm_head=False)
    names = key_map(num_heads, num_layers, format)
    expected = mm.heads.state_dict()
    check_state(state, {fk: expected[ok].shape for fk, ok in names.items()}, source)
    mm.heads.load_state_dict({ok: state[fk] for fk, ok in names.items()})
    mm.base_name = cfg.get("base_model_name_or_path") or mm.base_name
    return mm


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


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it gives the number of heads and layers")
    return json.loads(path.read_text())


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
        state = load_file(str(path))
    elif (directory / MEDUSA_WEIGHTS).exists():
        path = directory / MEDUSA_WEIGHTS
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        path = directory / MEDUSA_WEIGHTS_ST
        state = load_file(str(path))
    return {_strip_prefix(k): v for k, v in state.items()}, path.name


def _strip_prefix(key: str) -> str:
    for prefix in ("medusa_heads.", "medusa_head."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# ----------------------------------------------------------------------------- model card


def model_card(mm: MedusaModel, info: dict) -> str:
    """README.md for a heads folder: what it is, how it was trained and measured, how to load it."""
    base, heads = mm.base_name, mm.heads
    front = "---\nlibrary_name: medusa_lib\ntags:\n- medusa\n- speculative-decoding\n"
    if "/" in base:  # the hub checks base_model against existing repos
        front += f"base_model: {base}\n"
    n_params = sum(p.numel() for p in heads.parameters())
    proj = "share the base model's `lm_head`" if heads.share_lm_head else "each have their own vocab projection"
    lines = [front + "---", "", f"# Medusa heads for {base}", "",
             f"{heads.num_heads} Medusa heads (Cai et al., 2024), {heads.num_layers} ResBlock(s) each; "
             f"the heads {proj} ({n_params:,} trainable parameters).", "",
             "| | |", "|---|---|",
             f"| Base model | `{base}` |",
             f"| Training data | {info.get('data') or 'not recorded'} |",
             f"| Recipe | {info.get('recipe') or 'not recorded'} |",
             f"| Training wall time | {_wall_time(info.get('wall_time'))} |",
             f"| Mean accepted length τ | {_tau(info.get('tau'))} |",
             f"| Head top-1 accuracy | {_accuracy(info.get('head_accuracy'))} |",
             f"| Positions measured | {info.get('positions') or 'not measured'} |", ""]
    return "\n".join(lines + _how_to_load(mm, info)) + "\n"


def _tau(tau) -> str:
    return "not measured" if tau is None else f"{float(tau):.2f} tokens per base forward pass"


def _wall_time(wall) -> str:
    if wall is None:
        return "not measured"
    return f"{float(wall):.0f} s" if isinstance(wall, (int, float)) else str(wall)


def _accuracy(acc) -> str:
    """One float, or one per head (a list), as percentages: 0.62 and 62.0 both read 62.0%."""
    if acc is None:
        return "not measured"
    if not isinstance(acc, (list, tuple)):
        return _pct(acc)
    return ", ".join(f"head {k + 1}: {_pct(a)}" for k, a in enumerate(acc))


def _pct(a) -> str:
    return f"{float(a):.1%}" if float(a) <= 1 else f"{float(a):.1f}%"


def _how_to_load(mm: MedusaModel, info: dict) -> list[str]:
    where = info.get("repo_id") or "path/to/this/folder"
    base_arg = "embedded" if mm.base_name == EMBEDDED_NAME else mm.base_name
    lines = ["## How to load", "", "With medusa_lib (a hub copy: download it first with "
             "`huggingface_hub.snapshot_download`):", "", "```python",
             "from medusa_lib.heads import MedusaModel", "from medusa_lib.models import load_base", "",
             f'base, tok = load_base("{base_arg}")', f'mm = MedusaModel.from_pretrained("{where}", base=base)', "```"]
    if info.get("format") == "vllm":
        lines += ["", "With vLLM, as a speculative decoder:", "", "```python", "from vllm import LLM", "",
                  f'llm = LLM(model="{mm.base_name}", speculative_config={{"method": "medusa", '
                  f'"model": "{where}", "num_speculative_tokens": {mm.heads.num_heads}}})', "```"]
    if info.get("format") == "medusa":
        lines += ["", "With FasterDecoding/Medusa:", "", "```python",
                  "from medusa.model.medusa_model import MedusaModel", "",
                  f'model = MedusaModel.from_pretrained("{where}")', "```"]
    return lines


# ----------------------------------------------------------------------------- hub


def push_to_hub(directory, repo_id: str, token: str | None = None):
    """Create `repo_id` (if needed) and upload the folder. Needs network and a write token."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    return api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model")


# ----------------------------------------------------------------------------- CLI


def base_load_name(name: str) -> str:
    """The `load_base` name for a checkpoint's base_model_name_or_path."""
    return "embedded" if name == EMBEDDED_NAME else name


def _heads_base_name(heads_dir: Path) -> str:
    for name in (CONFIG_NAME, "config.json"):
        if (heads_dir / name).exists():
            found = json.loads((heads_dir / name).read_text()).get("base_model_name_or_path")
            if found:
                return found
    raise ValueError(f"{heads_dir} does not name its base model; pass --base")


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m medusa_lib.export", description=__doc__.splitlines()[0])
    parser.add_argument("--heads", required=True, help="folder written by MedusaModel.save_pretrained")
    parser.add_argument("--format", choices=FORMATS, default="vllm")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--base", default=None, help="load_base name (default: the heads' base model)")
    args = parser.parse_args(argv)
    heads_dir = Path(args.heads)
    base, _ = load_base(base_load_name(args.base or _heads_base_name(heads_dir)), device="cpu")
    mm = MedusaModel.from_pretrained(heads_dir, base=base)
    info = _saved_info(heads_dir)
    out = export_heads(mm, args.out, args.format, info)
    for path in sorted(out.iterdir()):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return out


def _saved_info(heads_dir: Path) -> dict:
    """Training/eval notes saved next to the heads (save_pretrained's `extra`), if any."""
    path = heads_dir / CONFIG_NAME
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()

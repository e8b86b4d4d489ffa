"""Recipes: which drafter a command or notebook decodes with, and how a fresh set of heads is trained.

This is the top of the house: it reads the profiles (`config.PROFILES`: head count, shared or own lm_head,
draft vocabulary, kind), finds shipped or named drafters (`interop.load_heads`, `eagle.load_eagle`) and
trains heads only when asked (`quick=True`). The kinds live in one registry (`drafters.KINDS`):

    medusa, hydra   heads on the last hidden state (Cai et al., 2024; Ankner et al., 2024), static tree
    eagle           a feature-level drafter on a dynamic tree (Li et al., 2024), `eagle.py`
    pld             prompt lookup (Saxena, 2023), no weights
    hybrid          `HYBRID_HEADS` and prompt lookup, merged into one tree a step

`DEFAULT_KIND` is what the commands decode with when no `--kind` is given: the fastest kind in the race
(`medusa_lib/assets/heads_race.json`, `scripts/compare_heads.py`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medusa_lib.backbone import as_backbone
from medusa_lib.config import PROFILES, HeadConfig, Profile, TrainConfig, smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data
from medusa_lib.drafters import KINDS, PromptLookupDrafter, heads_with_lookup
from medusa_lib.eagle import load_eagle, read_eagle_config
from medusa_lib.heads import CONFIG_NAME, SHIPPED, MedusaModel, read_config
from medusa_lib.interop import load_heads
from medusa_lib.models import EMBEDDED_NAME
from medusa_lib.train import train_heads

HYBRID_HEADS = "hydra"  # the hybrid's heads: the faster shipped set of heads in assets/heads_race.json
DEFAULT_KIND = "hybrid"  # what the commands decode with: the fastest kind overall in assets/heads_race.json (a test)
SHIPPED_DRAFTERS = {**SHIPPED, "eagle": SHIPPED["medusa"].with_name("embedded-eagle")}  # `scripts/make_eagle.py`

# ----------------------------------------------------------------------------- the profile of a model


def profile_of(model) -> Profile:
    """The profile whose backbone `model` is (by its name; a rehearsal copy of a hub backbone, whose folder is
    named after it, counts as that backbone), else the embedded profile's sizes."""
    name = str(getattr(as_backbone(model).config, "name_or_path", ""))
    for prof in PROFILES.values():
        hub = "/" in prof.backbone and Path(prof.backbone).name in Path(name).name
        if name == prof.backbone or hub or (prof.backbone == "embedded" and name == EMBEDDED_NAME):
            return prof
    return PROFILES["embedded"]


# ----------------------------------------------------------------------------- training recipes


def fresh_heads(model, rows, eval_rows=None, epochs: int = 2, head: HeadConfig | None = None, draft=None,
                save_dir=None, seed: int = 0, progress: bool = True) -> tuple[MedusaModel, dict]:
    """Fresh heads as `head` names them (default: the profile of `model`, `profile_of`), Medusa-1 on `rows`.

    The draft vocabulary is the `head.draft_size` most frequent answer tokens of `rows` (0: the full
    vocabulary); `draft` overrides it with a size or the token ids. Returns (heads, trainer state)."""
    head = head or profile_of(model).head
    mm = MedusaModel.from_base(model, head.num_heads, head.num_layers, head.share_lm_head, head.kind)
    draft = head.draft_size if draft is None else draft
    if isinstance(draft, int) and draft:
        draft = draft_vocab(rows, draft, model.config.vocab_size)
    if draft is not None and not isinstance(draft, int):
        mm.set_draft_vocab(draft)
    cfg = TrainConfig(epochs=epochs, offsets=tuple(range(1, head.num_heads + 1)), seed=seed)
    state = train_heads(mm, rows, eval_rows, cfg=cfg, save_dir=save_dir, overwrite=True, progress=progress)
    return mm, state


def quick_heads(model, tok, n_prompts: int | None = None, max_new_tokens: int | None = None,
                epochs: int | None = None, save_dir=None, progress: bool = True,
                head: HeadConfig | None = None) -> tuple[MedusaModel, dict]:
    """A small set of heads trained in a few minutes on a CPU, for notebooks without heads and
    `demo --train`: self-distil `n_prompts` training prompts (cached on disk), then `fresh_heads`."""
    n_prompts, max_new_tokens = n_prompts or smoke(40, 4), max_new_tokens or smoke(128, 16)
    prompts = [p.prompt for p in load_prompts("train")[:n_prompts]]
    rows = self_distill_data(model, tok, prompts, max_new_tokens, batch_size=16, progress=progress)
    return fresh_heads(model, rows, epochs=epochs or smoke(3, 1), head=head, save_dir=save_dir, progress=progress)


# ----------------------------------------------------------------------------- finding a drafter


def shipped_heads_fit(base, kind: str = "medusa") -> bool:
    """Whether the drafter of `kind` shipped with medusa_lib (for the embedded model) fits `base`."""
    folder = SHIPPED_DRAFTERS.get(kind)
    if folder is None:
        return False
    config = as_backbone(base).config
    try:
        cfg = read_eagle_config(folder) if kind == "eagle" else read_config(folder / CONFIG_NAME)
    except (OSError, ValueError):
        return False
    same = all(cfg.get(k) == getattr(config, k) for k in ("hidden_size", "vocab_size"))
    return same and getattr(config, "name_or_path", None) == cfg.get("base_model_name_or_path")


def resolve_heads(base, tok=None, heads=None, quick: bool = False, kind: str = "medusa", **quick_kwargs):
    """What `medusa_generate` decodes with, for every drafter kind (`drafters.KINDS`).

    `medusa`, `hydra`: a `MedusaModel`: the heads folder named (it must load, or this fails with the reason),
    else the shipped heads of `kind` when they fit `base`, else with `quick=True` a small set trained now
    (said out loud), else an error that says how to get heads. A named folder is never silently replaced.
    `eagle`: an `eagle.EagleDrafter` from the folder named, else the shipped one (never trained here).
    `pld`: prompt lookup on `base` (no weights). `hybrid`: the `HYBRID_HEADS` heads (found as above) and
    prompt lookup, merged into one tree each step."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "pld":
        if heads is not None:
            raise ValueError("prompt lookup (kind 'pld') uses no heads; leave heads unset")
        return PromptLookupDrafter(as_backbone(base))
    if kind == "hybrid":
        return heads_with_lookup(resolve_heads(base, tok, heads, quick, HYBRID_HEADS, **quick_kwargs))
    if heads is not None:
        return load_eagle(heads, base) if kind == "eagle" else load_heads(heads, base)
    if shipped_heads_fit(base, kind):
        folder = SHIPPED_DRAFTERS[kind]
        return load_eagle(folder, base) if kind == "eagle" else MedusaModel.from_pretrained(folder, base=base)
    return _no_shipped(base, tok, kind, quick, quick_kwargs)


def all_drafters(base, tok, medusa=None, **quick_kwargs) -> dict:
    """Every kind that can run on `base`, by kind, in `KINDS` order: heads found as `resolve_heads(quick=True)`
    finds them (the Medusa heads `medusa` if given), prompt lookup, the hybrid, and EAGLE only where a drafter
    ships for `base` (it is never trained here: `scripts/make_eagle.py` takes about half an hour)."""
    found = {"medusa": medusa or resolve_heads(base, tok, quick=True, **quick_kwargs),
             "hydra": resolve_heads(base, tok, quick=True, kind="hydra", **quick_kwargs),
             "pld": resolve_heads(base, tok, kind="pld")}
    found["hybrid"] = heads_with_lookup(found[HYBRID_HEADS])
    if shipped_heads_fit(base, "eagle"):
        found["eagle"] = resolve_heads(base, tok, kind="eagle")
    else:
        print(f"no EAGLE drafter ships for {model_name(base)}; train one with scripts/make_eagle.py")
    return {kind: found[kind] for kind in KINDS if kind in found}


def model_name(base) -> str:
    """The backbone's hub id or folder, as its config names it."""
    return getattr(as_backbone(base).config, "name_or_path", None) or "this model"


def _no_shipped(base, tok, kind: str, quick: bool, quick_kwargs: dict):
    """No drafter named and none shipped for `base`: train quick heads when asked, else say how to get some."""
    name = model_name(base)
    folder, noun = SHIPPED_DRAFTERS[kind], "drafter is" if kind == "eagle" else "heads are"
    why = (f"the shipped {kind} {noun} for another model than {name}" if folder.is_dir()
           else f"the shipped {kind} {noun} missing ({folder.name}/)")
    if kind == "eagle":
        raise FileNotFoundError(f"no EAGLE drafter given and {why}; train one with scripts/make_eagle.py "
                                f"(or eagle_train.train_eagle) and pass its folder")
    if not quick:
        raise FileNotFoundError(f"no heads given and {why}; train some with `train_kd --student_name ...` "
                                f"and pass their folder")
    # the quick recipe is the shipped heads' (3 shared heads): notebook 02 still assumes 3 heads, and a rehearsed
    # t4 with the t4 profile's 4 own heads failed there (make rehearse); fresh_heads takes a profile's heads
    head = replace(PROFILES["embedded"].head, kind=kind)
    print(f"no heads given ({why}): training a small quick set of {head.num_heads} {kind} heads now "
          f"(self-distil, Medusa-1; a few minutes)")
    return quick_heads(base, tok, head=head, **quick_kwargs)[0]

"""Medusa heads (Cai et al., 2024, Sec. 2.1.1) and the model that wears them.

Head k (k = 1..K) reads the backbone's last hidden state h_t (after the final norm, exactly
what `lm_head` sees) and predicts the token at t+k+1:

    p_t^(k) = softmax(W_k · (h_t + SiLU(W1_k · h_t + b1_k)))

The ResBlock's weight and bias start at zero, so a fresh head is the identity and, with W_k
initialised from the base `lm_head`, predicts exactly the base model's next token. With
`share_lm_head=True` every head reuses the frozen base `lm_head`: for SmolLM2 (V=49152, h=576)
that saves 28M parameters per head and keeps a checkpoint at a few MB.

Precision: the heads always hold fp32 weights, whatever the backbone's dtype. Under an fp16
backbone (a T4) plain fp16 weights would be turned into inf/NaN by the first AdamW update; so
the heads' forward runs under autocast to the backbone's dtype on CUDA, and in fp32 elsewhere.

Hydra heads (Ankner et al., 2024, arXiv 2402.05109), `kind="hydra"`: sequentially
dependent heads. Head k (0-based) also reads the input embeddings of the draft tokens before it on
its own tree path, x_{t+1} (the root: the base model's next token) .. x_{t+k+1}:

    z_k = ResBlock_k(W_in_k · [h_t ; e(x_{t+1}) ; ... ; e(x_{t+k+1})]),   W_in_k: (k+2)H -> H

then the same vocab projection as a Medusa head (shared `lm_head` or its own; draft vocabulary
alike). e is the base model's own input embedding table, frozen. W_in_k starts as [I, 0, ..., 0]:
it picks h_t, so a fresh Hydra head is exactly the fresh Medusa head. Drafting is then per node,
not per depth (`drafters.hydra_candidates`); vLLM and FasterDecoding cannot load Hydra heads.

Native save/load lives here (with the folder's model card); vLLM and FasterDecoding layouts,
and finding heads for a model, live in `medusa_lib.interop`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from medusa_lib.backbone import Backbone, few_rows_layout, logit_rows
from medusa_lib.backbone import core_model as _core
from medusa_lib.files import atomic_path, atomic_write_text, read_tensors
from medusa_lib.models import EMBEDDED_NAME

SHIPPED_HEADS = Path(__file__).parent / "assets" / "heads" / "embedded"  # trained by `make heads`
SHIPPED_HYDRA_HEADS = SHIPPED_HEADS.with_name("embedded-hydra")  # `make_heads.py --kind hydra`, the same data
KINDS = ("medusa", "hydra")  # Medusa heads read h_t; Hydra heads also read their draft path's embeddings
SHIPPED = {"medusa": SHIPPED_HEADS, "hydra": SHIPPED_HYDRA_HEADS}  # the shipped set of each kind
CONFIG_NAME = "medusa_config.json"
WEIGHTS_NAME = "heads.safetensors"
DRAFT_NAME = "draft_ids.pt"


class ResBlock(nn.Module):
    """x + SiLU(Linear(x)), zero-initialised: a fresh block is the identity."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):  # [..., H] -> [..., H]
        return x + F.silu(self.linear(x))


class MedusaHeads(nn.Module):
    """K heads, each `num_layers` ResBlocks then a vocab projection (own, or the shared base one)."""

    kind, name, paper = "medusa", "Medusa", "Cai et al., 2024"
    reads_path = False  # head k reads only h_t (Hydra heads also read their tree path's tokens)

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int = 3, num_layers: int = 1,
                 share_lm_head: bool = True, lm_head: nn.Linear | None = None):
        super().__init__()
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.num_heads, self.num_layers, self.share_lm_head = num_heads, num_layers, share_lm_head
        # a comprehension, never [block] * n: every head and every layer has its own weights
        self.blocks = nn.ModuleList(
            nn.Sequential(*[ResBlock(hidden_size) for _ in range(num_layers)]) for _ in range(num_heads)
        )
        self.lm_heads = None
        if not share_lm_head:
            self.lm_heads = nn.ModuleList(nn.Linear(hidden_size, vocab_size, bias=False)
                                          for _ in range(num_heads))
            if lm_head is not None:
                for proj in self.lm_heads:
                    proj.weight.data.copy_(lm_head.weight.data)

    def hidden(self, h, nxt=None):  # [..., H] (and Hydra's path embeddings [..., K, H]) -> [K, ..., H]
        return torch.stack([self.block(h, k, None if nxt is None else nxt[..., : k + 1, :])
                            for k in range(self.num_heads)])

    def block(self, h, k: int, prev=None):  # [..., H] -> [..., H], head k's ResBlocks (prev: unread here)
        with self.precision(h):
            return self.blocks[k](h if h.is_cuda else h.float())

    def precision(self, h):
        """Autocast to the backbone's half dtype on CUDA (fp32 master weights); plain fp32 elsewhere."""
        if h.is_cuda and h.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast("cuda", dtype=h.dtype)
        return contextlib.nullcontext()

    def project(self, z, base_lm_head: nn.Module, k: int | None = None):
        """Vocab logits of head states z [K, ..., H] (or one head's [..., H] when k is given)."""
        if self.lm_heads is None:
            return base_lm_head(z.to(base_lm_head.weight.dtype))
        with self.precision(z):  # as the ResBlocks: half compute on CUDA from the fp32 master weights
            if k is not None:
                return self.lm_heads[k](z if z.is_cuda else z.float())
            return torch.stack([proj(zk if zk.is_cuda else zk.float()) for proj, zk in zip(self.lm_heads, z)])

    def forward(self, h, base_lm_head: nn.Module, nxt=None):  # [B, T, H] (+ [B, T, K, H]) -> [K, B, T, V]
        """Logits of every head; heads that read their path are teacher-forced on `nxt`: head k at t reads
        nxt[:, t, :k+1], the embeddings of tokens t+1..t+k+1."""
        return torch.stack([self.project(self.block(h, k, None if nxt is None else nxt[..., : k + 1, :]),
                                         base_lm_head, k) for k in range(self.num_heads)])

    def config_dict(self) -> dict:
        return {"hidden_size": self.hidden_size, "vocab_size": self.vocab_size, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "share_lm_head": self.share_lm_head, "kind": self.kind}


def picks_first(hidden_size: int, n_inputs: int) -> nn.Linear:
    """W_in: n_inputs*H -> H, no bias, initialised to [I, 0, ..., 0] so that it returns its first input."""
    proj = nn.Linear(n_inputs * hidden_size, hidden_size, bias=False)
    with torch.no_grad():
        proj.weight.zero_()
        proj.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
    return proj


class HydraHeads(MedusaHeads):
    """Medusa heads whose head k first mixes h_t with the embeddings of the k+1 draft tokens before it."""

    kind, name, paper = "hydra", "Hydra", "Ankner et al., 2024"
    reads_path = True

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int = 3, num_layers: int = 1,
                 share_lm_head: bool = True, lm_head: nn.Linear | None = None):
        super().__init__(hidden_size, vocab_size, num_heads, num_layers, share_lm_head, lm_head)
        # head k reads [h ; e_1 ; ... ; e_{k+1}]: (k+2)H inputs
        self.inputs = nn.ModuleList(picks_first(hidden_size, k + 2) for k in range(num_heads))

    def block(self, h, k: int, prev=None):  # h [..., H], prev [..., k+1, H] -> [..., H]
        if prev is None or prev.shape[-2] != k + 1:
            raise ValueError(f"Hydra head {k} reads h and the embeddings of the {k + 1} tokens before it")
        x = torch.cat([h, prev.flatten(-2).to(h.dtype)], -1)  # [..., (k+2)H]
        with self.precision(h):
            return self.blocks[k](self.inputs[k](x if x.is_cuda else x.float()))


HEADS = {cls.kind: cls for cls in (MedusaHeads, HydraHeads)}  # the heads of each kind


class MedusaModel(nn.Module):
    """A base causal LM (plain or PEFT-wrapped) plus Medusa heads on its last hidden state. It carries the
    base as a `Backbone` (`mm.backbone`), and offers the backbone's parts as its own."""

    def __init__(self, base, heads: MedusaHeads, base_name: str | None = None):
        super().__init__()
        self.base, self.heads = base, heads
        few_rows_layout(heads)  # the heads' products of a few tree rows, in a CPU's fast layout
        self.base_name = base_name or _base_name(base)
        self.draft_ids = None  # optional LongTensor [N]: heads propose only these tokens (see set_draft_vocab)
        self._draft_weight = None

    @classmethod
    def from_base(cls, base, num_heads: int = 3, num_layers: int = 1, share_lm_head: bool = True,
                  kind: str = "medusa"):
        """Fresh heads on `base`: kind "medusa" (Cai et al.) or "hydra" (Ankner et al., sequentially dependent)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a whole number >= 1, got {num_heads!r}")
        cfg = _core(base).config
        heads = HEADS[kind](cfg.hidden_size, cfg.vocab_size, num_heads, num_layers, share_lm_head,
                          lm_head=_core(base).lm_head)
        device = _core(base).lm_head.weight.device
        return cls(base, heads.to(device=device, dtype=torch.float32))  # fp32 master weights, always

    # -- the pieces decoding and training need ------------------------------------------------

    @property
    def backbone(self) -> Backbone:
        """The base model as a `Backbone`: what decoding, batching and self-distillation take."""
        return Backbone(self.base)

    @property
    def decoder(self):
        """The transformer body: ids -> last hidden state (after the final norm)."""
        return self.backbone.decoder

    @property
    def lm_head(self):
        return self.backbone.lm_head

    @property
    def config(self):
        return self.backbone.config

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    @property
    def kind(self) -> str:
        return self.heads.kind

    def forward(self, input_ids, attention_mask=None, **kwargs):
        """Returns (base logits [B, T, V], head logits [K, B, T, V], decoder outputs).

        Hydra heads are teacher-forced on `input_ids` (zero embeddings past the end: see `next_embeds`).
        No KV cache is built unless one is passed (`cache=`) or asked for (`use_cache=True`)."""
        kwargs.setdefault("use_cache", kwargs.get("cache", kwargs.get("past_key_values")) is not None)
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        h = out.last_hidden_state  # [B, T, H]
        nxt = self.next_embeds(input_ids) if self.heads.reads_path else None
        return self.lm_head(h), self.heads(h, self.lm_head, nxt), out

    # -- Hydra: the draft tokens' embeddings ----------------------------------------------------

    def embed(self, ids):  # [...] token ids -> [..., H], the base model's frozen input embeddings
        table = _core(self.base).get_input_embeddings()
        return table(ids.to(table.weight.device)).detach()

    def next_embeds(self, input_ids):  # [B, T] -> [B, T, K, H]: e(x_{t+1}) .. e(x_{t+K}), zeros past the end
        e = self.embed(input_ids)  # [B, T, H]
        B, T, H = e.shape
        padded = torch.cat([e, e.new_zeros(B, self.num_heads, H)], 1)  # [B, T + K, H]
        return torch.stack([padded[:, j + 1: j + 1 + T] for j in range(self.num_heads)], 2)

    def head_state(self, h, k: int, path_ids=None):
        """Head k's state at h [N, H] -> [N, H]; heads that read their tree path (Hydra) also take the ids of
        the k+1 tokens before the one they guess, path_ids [N, k+1]: the root and the k drafts before it."""
        return self.heads.block(h, k, self.embed(path_ids) if self.heads.reads_path else None)

    def topk_along(self, h, k: int, path_ids, topk: int):
        """Top-k ids of head k at h [N, H] along a path holding path_ids [N, k+1] -> [N, topk]. Heads that do
        not read their path ignore it."""
        z = self.head_state(h, k, path_ids)  # [N, H]
        if self.draft_ids is None:
            return self.heads.project(z, self.lm_head, k).topk(topk, dim=-1).indices
        w = self.draft_weight(k)  # [Vd, H]
        return self.draft_ids[logit_rows(w, z.to(w.dtype)).topk(topk, dim=-1).indices]

    hydra_state, hydra_topk = head_state, topk_along  # the names of Hydra's own path-reading heads

    # -- save / load ----------------------------------------------------------------------------

    def save_pretrained(self, directory, extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        """heads.safetensors + medusa_config.json (+ draft_ids.pt) + a README.md card, each atomic.

        `dtype=torch.float16` stores the weights at half the size (the shipped heads); they load back
        into fp32 master weights. The heads only propose tokens, so this cannot change greedy output."""
        directory = Path(directory)
        cfg = {"base_model_name_or_path": self.base_name, **self.heads.config_dict(), **(extra or {})}
        state = {k: v.detach().to(dtype=dtype).contiguous().cpu() for k, v in self.heads.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        if self.draft_ids is not None:
            with atomic_path(directory / DRAFT_NAME) as tmp:
                torch.save(self.draft_ids.cpu(), tmp)
        else:  # an earlier save's draft vocabulary must not restrict these heads
            (directory / DRAFT_NAME).unlink(missing_ok=True)
        atomic_write_text(directory / CONFIG_NAME, json.dumps(cfg, indent=2))
        info = {**(extra or {}).get("training", {}), **(extra or {})}  # training records nest their figures
        atomic_write_text(directory / "README.md", model_card(self, info))
        return directory

    @classmethod
    def from_pretrained(cls, directory, base):
        """Load heads saved by `save_pretrained` onto `base`; mismatches fail with both sides named.

        vLLM and FasterDecoding/Medusa folders load with `medusa_lib.interop.load_heads`."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; is it a Medusa heads folder? "
                                    f"(vLLM and FasterDecoding folders: medusa_lib.interop.load_heads)")
        cfg = read_config(directory / CONFIG_NAME)
        check_compatible(cfg, _core(base).config, source=str(directory))
        mm = cls.from_base(base, cfg["num_heads"], cfg["num_layers"], cfg["share_lm_head"], cfg["kind"])
        mm.load_weights(directory)
        mm.base_name = cfg.get("base_model_name_or_path", mm.base_name)
        return mm

    def load_weights(self, directory) -> None:
        """Heads weights (and draft vocabulary) from a folder written by `save_pretrained`."""
        directory = Path(directory)
        state = _read_weights(directory / WEIGHTS_NAME)
        missing, unexpected = self.heads.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"{directory / WEIGHTS_NAME}: missing keys {missing}, unexpected keys {unexpected}")
        if (directory / DRAFT_NAME).exists():
            self.set_draft_vocab(read_draft_ids(directory / DRAFT_NAME, self.heads.vocab_size))

    # -- draft vocabulary (a CPU speed lever) -------------------------------------------------

    def set_draft_vocab(self, token_ids=None):
        """Let the heads propose only `token_ids` (e.g. the most frequent few thousand tokens).

        Like vLLM's `truncated_vocab_size` and EAGLE-3's draft vocabulary: the heads' projection
        shrinks from V rows to N, which is most of their cost on a CPU. The base model still
        verifies against the full vocabulary, so greedy decoding stays lossless.
        """
        if token_ids is None:
            self.draft_ids = self._draft_weight = None
            return
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.lm_head.weight.device)
        if ids.numel() == 0 or int(ids.max()) >= self.heads.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"draft vocab ids must be in [0, {self.heads.vocab_size})")
        self.draft_ids = ids
        self._draft_weight = None

    def head_topk(self, h, topk: int):
        """Top-k token ids of every head at hidden states h [N, H] -> [K, N, topk]. Heads that read their tree
        path (Hydra) have no such table: ask each head along a path with `topk_along`."""
        if self.heads.reads_path:
            raise ValueError(f"{self.heads.name} heads read their tree path's tokens too: use "
                             f"topk_along(h, k, path_ids, topk) for each head k, not head_topk")
        z = self.heads.hidden(h)  # [K, N, H]
        if self.draft_ids is None:
            return self.heads.project(z, self.lm_head).topk(topk, dim=-1).indices
        logits = torch.stack([logit_rows(self.draft_weight(k), z[k].to(self.draft_weight(k).dtype))
                              for k in range(self.num_heads)])  # [K, N, Vd]
        return self.draft_ids[logits.topk(topk, dim=-1).indices]

    def draft_weight(self, k: int):
        """Draft rows of head k's projection, cached until the weights change (their _version)."""
        projs = [self.lm_head] if self.heads.lm_heads is None else list(self.heads.lm_heads)
        key = tuple((p.weight.data_ptr(), p.weight._version) for p in projs)
        if self._draft_weight is None or self._draft_weight[0] != key:
            self._draft_weight = (key, [p.weight[self.draft_ids].detach().contiguous() for p in projs])
        weights = self._draft_weight[1]
        return weights[0 if len(weights) == 1 else k]


# ----------------------------------------------------------------------------- model card


def model_card(mm: MedusaModel, info: dict) -> str:
    """README.md for a heads folder: what it is, how it was trained and measured, how to load it."""
    base, heads = mm.base_name, mm.heads
    front = "---\nlibrary_name: medusa_lib\ntags:\n- medusa\n- speculative-decoding\n"
    if "/" in base:  # the hub checks base_model against existing repos
        front += f"base_model: {base}\n"
    n_params = sum(p.numel() for p in heads.parameters())
    proj = "share the base model's `lm_head`" if heads.share_lm_head else "each have their own vocab projection"
    name, paper = heads.name, heads.paper
    lines = [front + "---", "", f"# {name} heads for {base}", "",
             f"{heads.num_heads} {name} heads ({paper}), {heads.num_layers} ResBlock(s) each; "
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


# ----------------------------------------------------------------------------- checks
REQUIRED_KEYS = ("hidden_size", "vocab_size", "num_heads", "num_layers", "share_lm_head")
RESAVE = "re-save the heads with MedusaModel.save_pretrained, or delete the folder and train them again"
FOREIGN_FIX = "it should be the config.json that vLLM or FasterDecoding/Medusa saved with the heads"


def read_config(path: Path, foreign: bool = False) -> dict:
    """The one reader of a heads config: the JSON object in `path`; a missing, damaged or partial file
    fails, naming it. Ours (medusa_config.json) must hold every key `from_pretrained` needs; a foreign
    one (vLLM's or FasterDecoding's config.json, `foreign=True`) has its keys checked by `interop`."""
    fix = FOREIGN_FIX if foreign else RESAVE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it gives the number of heads and layers; {fix}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(cfg).__name__}; {fix}")
    if foreign:
        return cfg
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path} is missing {', '.join(missing)} (a Medusa heads config needs "
                         f"{', '.join(REQUIRED_KEYS)}); {RESAVE}")
    for key in REQUIRED_KEYS[:4]:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{path}: {key} must be a whole number >= 1, got {cfg[key]!r}; {RESAVE}")
    if not isinstance(cfg["share_lm_head"], bool):
        raise ValueError(f"{path}: share_lm_head must be true or false, got {cfg['share_lm_head']!r}; {RESAVE}")
    cfg.setdefault("kind", "medusa")  # configs written before Hydra heads existed
    if cfg["kind"] not in KINDS:
        raise ValueError(f"{path}: kind must be one of {KINDS}, got {cfg['kind']!r}; {RESAVE}")
    return cfg


def _read_weights(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (the folder has a config but no weights); {RESAVE}")
    return read_tensors(path, RESAVE)


def read_draft_ids(path: Path, vocab_size: int) -> torch.Tensor:
    """The saved draft vocabulary: a 1-D integer tensor of ids in [0, vocab_size)."""
    fix = f"re-save the heads with MedusaModel.save_pretrained, or delete {path.name} to draft from the full vocabulary"
    ids = read_tensors(path, fix)
    ok = isinstance(ids, torch.Tensor) and ids.dim() == 1 and ids.numel() > 0 and not ids.dtype.is_floating_point
    if not ok or int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"{path} must hold a 1-D tensor of token ids in [0, {vocab_size}); {fix}")
    return ids


def check_compatible(cfg: dict, base_config, source: str = "checkpoint") -> None:
    """Heads trained for another backbone fail here, naming both sides."""
    for key in ("hidden_size", "vocab_size"):
        want, have = cfg.get(key), getattr(base_config, key)
        if want != have:
            raise ValueError(f"{source}: heads have {key}={want} but the base model has {key}={have}; "
                             f"these heads were trained for {cfg.get('base_model_name_or_path', 'another model')}")
    if int(cfg.get("num_heads", 0)) < 1:
        raise ValueError(f"{source}: num_heads must be >= 1, got {cfg.get('num_heads')}")


def _base_name(base) -> str:
    return str(getattr(_core(base).config, "name_or_path", "") or "unknown")

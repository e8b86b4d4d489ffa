"""EAGLE: a feature-level drafter, with EAGLE-2's dynamic tree.

EAGLE (Li et al., 2024, arXiv 2401.15077, Sec. 3) drafts one level below the tokens: it predicts the base
model's next *feature* (its last hidden state, after the final norm) from the current feature and the token
the base model chose there, then reads the token off that predicted feature through the base lm_head. The
token input removes the feature's uncertainty ("which token was actually sampled?"), and one decoder layer
of the backbone's own architecture, attending over earlier positions, does the rest:

    x_t = fc([e(x_{t+1}); f_t])           2H -> H
    o_t = DecoderLayer(x_t | x_<t)         one layer, its own KV cache
    o_t ~ f_{t+1};  next token ~ lm_head(o_t), over the draft vocabulary

Drafting is autoregressive: a drafted token and its predicted feature feed the next depth. EAGLE-2 (Li et al.,
2024, arXiv 2406.16858, Sec. 4) makes the tree dynamic: expand the `topk` best frontier nodes by cumulative
log-probability, depth by depth, then rerank every drafted node and send the best `nodes` to verification.

Training is self-distillation (Sec. 3.2): teacher-forced on the base model's own answers with a causal mask,
SmoothL1 on the features plus cross-entropy against the base model's next-token distribution, with noise on
the input features so that drafting on its own (noisier) predictions is not a surprise.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import DynamicCache

from medusa_lib.backbone import as_backbone, few_rows_layout, logit_rows
from medusa_lib.drafters import Draft, Drafter, token_tree
from medusa_lib.files import atomic_path, atomic_write_text, read_tensors

WEIGHTS_NAME = "eagle.safetensors"
CONFIG_NAME = "eagle_config.json"


# ----------------------------------------------------------------------------- the network


class EagleNet(nn.Module):
    """fc over [token embedding; feature] and one decoder layer of the backbone's architecture, without its
    input norm (EAGLE's layer 0 has none), so the weights map one to one onto SafeAILab/EAGLE's checkpoints.

    `draft_ids` [Vd]: the tokens it may propose (rows of the frozen base lm_head it reads)."""

    def __init__(self, base_config, layer_cls, rotary_cls, draft_ids: torch.Tensor):
        super().__init__()
        cfg = copy.deepcopy(base_config)
        cfg.num_hidden_layers, cfg.layer_types = 1, None
        self.cfg, H = cfg, base_config.hidden_size
        self.fc = nn.Linear(2 * H, H)
        self.layer = layer_cls(cfg, layer_idx=0)
        self.layer.input_layernorm = nn.Identity()  # as EAGLE's first layer: fc's output goes straight in
        self.rotary = rotary_cls(config=cfg)
        self.register_buffer("draft_ids", torch.as_tensor(draft_ids, dtype=torch.long))

    @classmethod
    def for_backbone(cls, backbone, draft_ids: torch.Tensor, from_last_layer: bool = False) -> EagleNet:
        """A fresh net shaped like `backbone`'s decoder layers, fp32, on its device; `from_last_layer` starts
        its decoder layer from a copy of the backbone's last one (a pretrained start, not a random one)."""
        bb = as_backbone(backbone)
        dec = bb.decoder
        net = cls(bb.config, type(dec.layers[0]), type(dec.rotary_emb), draft_ids)
        if from_last_layer:
            state = {k: v.float() for k, v in dec.layers[-1].state_dict().items() if "input_layernorm" not in k}
            net.layer.load_state_dict(state)
        return net.to(bb.lm_head.weight.device)

    def forward(self, emb: torch.Tensor, feat: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache: DynamicCache | None = None) -> torch.Tensor:
        """emb, feat [B, T, H]; mask [B or 1, 1, T, S] float (0 = visible, -inf = not); positions [B, T]
        -> predicted next features [B, T, H]. With `cache`, its S - T earlier entries are attended and kept."""
        x = self.fc(torch.cat([emb, feat], -1).to(self.fc.weight.dtype))
        pos_emb = self.rotary(x, positions)
        return self.layer(x, attention_mask=mask, position_ids=positions, cache=cache, use_cache=cache is not None,
                          position_embeddings=pos_emb)


def causal_mask(T: int, dtype, device) -> torch.Tensor:
    """[1, 1, T, T] float: 0 on and below the diagonal, -inf above."""
    return torch.full((T, T), float("-inf"), dtype=dtype, device=device).triu(1)[None, None]


def draft_weight(bb, draft_ids: torch.Tensor) -> torch.Tensor:
    """[Vd, H] rows of the frozen base lm_head for the draft vocabulary."""
    return bb.lm_head.weight.detach()[draft_ids]


# ----------------------------------------------------------------------------- drafting (EAGLE-2)


@dataclass
class EagleTree:
    depth: int = 5  # drafting rounds after the root: the tree's depth
    topk: int = 8  # children per expanded node, and nodes expanded per depth
    nodes: int = 24  # drafted nodes kept for verification (root excluded)


class EagleDrafter(Drafter):
    """EAGLE's drafter behind the `Drafter` interface, with its own KV cache over the verified context.

    Each step it first reads the positions verified since the last step (their true features, the tokens
    after them), so its cache always equals a fresh pass over the accepted context; then it grows a
    dynamic tree from the root and crops the drafted entries away again."""

    kind = "eagle"

    def __init__(self, net: EagleNet, backbone, tree: EagleTree | None = None):
        self.net, self.backbone, self.tree = net.eval(), as_backbone(backbone), tree or EagleTree()
        few_rows_layout(self.net)  # its layer's products of a few frontier rows, in a CPU's fast layout
        check_eagle_tree(self.tree, net.draft_ids.numel())
        self.weight = draft_weight(self.backbone, net.draft_ids).to(net.fc.weight.dtype)  # [Vd, H]
        self.cache, self.fed = None, 0

    def start(self, prompt: list[int]) -> None:
        self.cache, self.fed = DynamicCache(config=self.net.cfg), 0

    @torch.no_grad()
    def read(self, h: torch.Tensor, next_tokens: list[int]) -> torch.Tensor:
        """Feed the verified positions fed .. fed + A - 1: their features h [A, H] and the tokens after
        them [A]. Returns the predicted feature after the last one [1, H]."""
        A, dev = h.shape[0], h.device
        emb = self.backbone.embed(torch.tensor([next_tokens], device=dev))  # [1, A, H]
        mask = torch.cat([torch.zeros(A, self.fed, device=dev), causal_mask(A, torch.float32, dev)[0, 0]], 1)
        pos = torch.arange(self.fed, self.fed + A, device=dev)[None]  # [1, A]
        o = self.net(emb, h[None], mask[None, None].to(self.weight.dtype), pos, self.cache)  # [1, A, H]
        self.fed += A
        return o[0, -1:]

    @torch.no_grad()
    def propose(self, h: torch.Tensor, root: int, context: list[int]) -> Draft:
        A = h.shape[0]  # h: the features of context's last A positions, verified since the last step
        if self.cache is None or self.fed != len(context) - A:
            raise RuntimeError(f"the EAGLE drafter has read {self.fed} positions but the context before these "
                               f"{A} states holds {len(context) - A}; call start() before a new generation")
        o = self.read(h, context[len(context) - A + 1:] + [root])  # [1, H]
        seqs = self.grow(o, h.device)
        crop(self.cache, self.fed)  # drop the drafted entries: only verified positions stay
        return token_tree(root, seqs, device=h.device)

    def grow(self, o_root: torch.Tensor, dev) -> list[list[int]]:
        """EAGLE-2's dynamic tree from the root's predicted feature [1, H]: returns the token paths of the
        kept nodes' leaves, best first. Each depth is one batched forward of the `topk` frontier nodes."""
        k, P = self.tree.topk, self.fed
        logp = torch.log_softmax(logit_rows(self.weight, o_root).float(), -1)  # [1, Vd]
        score, idx = logp[0].topk(k)  # [k] the depth-1 nodes
        toks, scores, parents = [self.net.draft_ids[idx]], [score], [torch.full((k,), -1, device=dev)]
        front = torch.arange(k, device=dev)  # node ids of the frontier
        front_o, vis, n = o_root.expand(k, -1), torch.zeros(k, 0, dtype=torch.bool, device=dev), k
        for d in range(1, self.tree.depth):
            emb = self.backbone.embed(torch.cat(toks)[front])[None]  # [1, F, H]
            F_ = len(front)
            mask = tree_mask(vis, P, self.weight.dtype)  # [1, 1, F, P + E + F]
            pos = torch.full((1, F_), P + d - 1, device=dev)
            out = self.net(emb, front_o[None], mask, pos, self.cache)[0]  # [F, H]
            logp = torch.log_softmax(logit_rows(self.weight, out).float(), -1)  # [F, Vd] (W @ h.T: faster on MKL)
            cum = torch.cat(scores)[front][:, None] + logp  # [F, Vd]
            top, col = cum.topk(k, -1)  # [F, k] each frontier node's k best children
            toks.append(self.net.draft_ids[col.flatten()])
            scores.append(top.flatten())
            parents.append(front.repeat_interleave(k))
            best = top.flatten().topk(k).indices  # [k] the next frontier, among the F * k children
            E = vis.shape[1]
            vis = torch.cat([vis, torch.zeros(F_, F_, dtype=torch.bool, device=dev)], 1)
            vis[torch.arange(F_), E + torch.arange(F_)] = True  # each frontier node sees its own entry
            row = best // k  # the frontier row of each new frontier node's parent
            vis, front_o = vis[row], out[row]
            front = n + best
            n += F_ * k
        return best_paths(torch.cat(toks), torch.cat(scores), torch.cat(parents), self.tree.nodes)


def check_eagle_tree(tree: EagleTree, draft_size: int) -> None:
    """Depth, topk and nodes are whole numbers >= 1, and topk fits the draft vocabulary."""
    for name in ("depth", "topk", "nodes"):
        value = getattr(tree, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"EagleTree.{name} must be a whole number >= 1, got {value!r}")
    if tree.topk > draft_size:
        raise ValueError(f"EagleTree.topk={tree.topk} is more than the {draft_size} tokens the drafter may propose")


def tree_mask(vis: torch.Tensor, past: int, dtype) -> torch.Tensor:
    """[1, 1, F, past + E + F] float mask of F frontier nodes: every cached position, the drafted entries
    each one descends from (`vis` [F, E]) and itself."""
    F_, E = vis.shape
    seen = torch.cat([torch.ones(F_, past, dtype=torch.bool, device=vis.device), vis,
                      torch.eye(F_, dtype=torch.bool, device=vis.device)], 1)
    return torch.zeros(seen.shape, dtype=dtype, device=vis.device).masked_fill(~seen, float("-inf"))[None, None]


def best_paths(toks: torch.Tensor, scores: torch.Tensor, parents: torch.Tensor, nodes: int) -> list[list[int]]:
    """The `nodes` drafted nodes of highest cumulative log-probability (an ancestor always scores at least
    as high, and ties go to the shallower node, so the kept set is a tree); their leaves' token paths, best
    first. One transfer to the host."""
    order = torch.argsort(scores, descending=True, stable=True)[:nodes]  # stable: earlier (shallower) first
    M = len(toks)
    host = torch.cat([toks, parents.to(toks.dtype), order]).tolist()  # one read: a GPU syncs once per step
    toks, parents, order = host[:M], host[M:2 * M], host[2 * M:]
    has_child = {parents[i] for i in order}
    paths = []
    for leaf in (i for i in order if i not in has_child):
        path, j = [], leaf
        while j != -1:  # up to the root
            path.append(toks[j])
            j = parents[j]
        paths.append(path[::-1])
    return paths


def crop(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of every layer of `cache`."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]


# ----------------------------------------------------------------------------- save / load


def save_eagle(net: EagleNet, directory, base_name: str, tree: EagleTree | None = None, info: dict | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """eagle.safetensors (the net and its draft vocabulary) + eagle_config.json + a README.md card, each
    atomic. `dtype=torch.float16` halves the file; the weights load back into fp32."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in net.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    cfg = {"kind": "eagle", "base_model_name_or_path": base_name, "hidden_size": net.cfg.hidden_size,
           "vocab_size": net.cfg.vocab_size, "draft_size": int(net.draft_ids.numel()),
           "tree": asdict(tree or EagleTree()), **(info or {})}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(cfg, indent=2))
    atomic_write_text(directory / "README.md", model_card(cfg))
    return directory


def read_eagle_config(directory) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; is it an EAGLE drafter folder?")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-save the drafter") from e
    if not isinstance(cfg, dict) or cfg.get("kind") != "eagle":
        raise ValueError(f"{path} does not describe an EAGLE drafter (kind {cfg.get('kind')!r})")
    return cfg


def load_eagle(directory, backbone, tree: EagleTree | None = None) -> EagleDrafter:
    """The drafter saved in `directory` on `backbone` (a causal LM or its parts); shapes are checked first."""
    cfg = read_eagle_config(directory)
    bb = as_backbone(backbone)
    mine = {"hidden_size": bb.config.hidden_size, "vocab_size": bb.config.vocab_size}
    diff = [f"{k} {cfg.get(k)} there, {v} here" for k, v in mine.items() if cfg.get(k) != v]
    if diff:
        raise ValueError(f"{directory}: this EAGLE drafter was trained for another model ({'; '.join(diff)})")
    try:
        state = read_tensors(Path(directory) / WEIGHTS_NAME, "save the drafter again (save_eagle)")
    except Exception as e:  # a truncated or damaged file: say which one
        raise ValueError(f"{Path(directory) / WEIGHTS_NAME} cannot be read ({e}); re-save or re-download it") from e
    net = EagleNet.for_backbone(bb, state["draft_ids"])
    missing, unexpected = net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                              strict=False)
    if missing or unexpected:
        raise KeyError(f"{Path(directory) / WEIGHTS_NAME}: missing keys {missing}, unexpected keys {unexpected}")
    return EagleDrafter(net, backbone, tree or EagleTree(**cfg.get("tree", {})))


# ----------------------------------------------------------------------------- SafeAILab/EAGLE's layout

EAGLE_WEIGHTS = "pytorch_model.bin"


def export_eagle(net: EagleNet, directory, base_name: str) -> Path:
    """The drafter in SafeAILab/EAGLE's checkpoint layout, which engines that load EAGLE drafters read:
    config.json (the base's config with one layer, `bias`: the fc has one) and pytorch_model.bin with
    `fc.*` and `layers.0.*` (layer 0 has no input norm, as ours). EAGLE-1/2 read tokens off the full
    lm_head; our draft vocabulary travels beside it (draft_ids.pt), for `import_eagle`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {("fc." if k.startswith("fc.") else "layers.0.") + k.split(".", 1)[1]: v.detach().cpu().contiguous()
             for k, v in net.state_dict().items() if k.startswith(("fc.", "layer."))}
    with atomic_path(directory / EAGLE_WEIGHTS) as tmp:
        torch.save(state, tmp)
    with atomic_path(directory / "draft_ids.pt") as tmp:
        torch.save(net.draft_ids.cpu(), tmp)
    cfg = {**net.cfg.to_dict(), "num_hidden_layers": 1, "architectures": ["LlamaForCausalLM"], "bias": True,
           "base_model_name_or_path": base_name}
    atomic_write_text(directory / "config.json", json.dumps(cfg, indent=2, default=str))
    return directory


def import_eagle(directory, backbone, tree: EagleTree | None = None) -> EagleDrafter:
    """A drafter from SafeAILab/EAGLE's layout (what `export_eagle` writes), on `backbone`."""
    directory = Path(directory)
    state = read_tensors(directory / EAGLE_WEIGHTS, "export the drafter again")
    bb = as_backbone(backbone)
    draft = directory / "draft_ids.pt"
    ids = read_tensors(draft, "export the drafter again") if draft.exists() else torch.arange(bb.config.vocab_size)
    net = EagleNet.for_backbone(bb, ids)
    ours = {("fc." if k.startswith("fc.") else "layer.") + k.split(".", 2 if k.startswith("layers.") else 1)[-1]: v
            for k, v in state.items()}
    missing, unexpected = net.load_state_dict({**ours, "draft_ids": net.draft_ids}, strict=False)
    if missing or unexpected:
        raise KeyError(f"{directory / EAGLE_WEIGHTS}: missing keys {missing}, unexpected keys {unexpected}")
    return EagleDrafter(net.float(), backbone, tree)


def model_card(cfg: dict) -> str:
    """README.md of a drafter folder: what it is, its recipe and figures, how to load it."""
    lines = [f"# EAGLE drafter for {cfg['base_model_name_or_path']}", "",
             "A feature-level drafter (Li et al., 2024, arXiv 2401.15077) with EAGLE-2's dynamic tree "
             "(arXiv 2406.16858), trained with medusa_lib by self-distillation.", "",
             f"- draft vocabulary: {cfg['draft_size']} tokens; tree: {cfg['tree']}"]
    lines += [f"- {k}: {v}" for k, v in cfg.items() if k in ("data", "recipe", "accuracy", "tau", "wall_time")]
    lines += ["", "```python", "from medusa_lib.recipes import resolve_heads",
              "drafter = resolve_heads(model, tok, heads=\"<this folder>\", kind=\"eagle\")",
              "out = medusa_generate(drafter, input_ids)", "```", ""]
    return "\n".join(lines)

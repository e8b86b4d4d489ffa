"""Drafters: what proposes the candidate tree that one verification forward checks.

Speculative decoding splits a step in two (Leviathan et al., 2023; Medusa, Cai et al., 2024, Sec. 2.1):
something cheap *drafts* candidate continuations, and the base model *verifies* them all in one forward
under a tree mask. Decoding (`decoding.medusa_generate`) owns the verification and never names a drafter's
kind; a drafter owns how its tree is built, as HF's `CandidateGenerator` and EAGLE's `topK_genrate` do.

Every drafter answers one question each step: given the hidden states verified since its last step
h [A, H] (the prompt's at the start, then the accepted path's; heads read only the last row), the next root
token (the base model's own choice, always right) and the context so far (its last A tokens are the ones
those states were computed at), which tree of tokens should the base model check? It returns a `Draft`
(a `Tree` and the token of every node) and may learn from what was accepted. The kinds:

- `medusa`, `hydra`: trained heads on h (Sec. 2.1.1; Hydra: Ankner et al., 2024), on a static tree;
- `eagle`: a feature-level drafter, one decoder layer deep, on a dynamic tree (`eagle.py`; Li et al., 2024);
- `pld`: prompt lookup (Saxena, 2023): continuations of the longest n-gram of the context's end that
  occurred earlier in the context. No weights; several matches give several branches;
- `hybrid`: two drafters' trees merged into one (shared prefixes merged), the node budget split by each
  drafter's measured acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medusa_lib.backbone import Backbone, as_backbone
from medusa_lib.tree import Tree

KINDS = ("medusa", "hydra", "eagle", "pld", "hybrid")  # every drafter `recipes.resolve_heads(kind=...)` builds


@dataclass
class Draft:
    tree: Tree
    tokens: torch.Tensor  # [N] token of every node; node 0 is the root

    def sequences(self) -> list[list[int]]:
        """The token path of every leaf, root excluded, best first: in the order of their rank paths (rank 0 is
        each proposer's first choice). What the draft proposes, as plain lists."""
        leaves = sorted((leaf for leaf in self.tree.leaves() if leaf), key=lambda leaf: self.tree.paths[leaf - 1])
        toks = self.tokens.tolist()
        return [[toks[i] for i in self.tree.ancestors(leaf)[1:]] for leaf in leaves]


class Drafter:
    """Proposes one candidate tree per step. Subclasses set `kind` and `backbone`, the `Backbone` that
    verifies (a `MedusaModel`'s is `mm.backbone`; `as_backbone` makes one of any causal LM)."""

    kind = "drafter"
    backbone: Backbone | None = None

    def start(self, prompt: list[int]) -> None:
        """A new generation begins (its prompt ids)."""

    def propose(self, h: torch.Tensor, root: int, context: list[int]) -> Draft:
        raise NotImplementedError

    def accepted(self, draft: Draft, path: list[int]) -> None:
        """The nodes of `draft` that verification accepted (root first); a drafter may learn from them."""


# ----------------------------------------------------------------------------- heads (Medusa, Hydra)


class HeadsDrafter(Drafter):
    """Medusa or Hydra heads on a static tree: head k's guesses fill depth k+1."""

    def __init__(self, mm, tree: Tree | None = None):
        self.mm, self.backbone = mm, mm.backbone
        self.tree = tree or Tree.default(mm.num_heads)
        check_tree(mm, self.tree)
        self.kind = mm.kind

    def propose(self, h: torch.Tensor, root: int, context: list[int]) -> Draft:
        return Draft(self.tree, draft(self.mm, self.tree, h[-1:], root))


def check_tree(mm, tree: Tree) -> None:
    """The tree must fit the heads: one head per depth, and top-k within what the heads can propose."""
    if not isinstance(tree, Tree):
        raise TypeError(f"tree must be a Tree, got {type(tree).__name__}; "
                        f"build one with Tree.from_choices([[0], [0, 0], [1]]) or Tree.default(num_heads)")
    if tree.depth > mm.num_heads:
        raise ValueError(f"tree depth {tree.depth} needs {tree.depth} heads; the model has {mm.num_heads}")
    proposed = mm.draft_ids.numel() if mm.draft_ids is not None else mm.heads.vocab_size
    if tree.max_rank > proposed:
        raise ValueError(f"tree rank {tree.max_rank - 1} needs top-{tree.max_rank} but the heads propose only "
                         f"{proposed} tokens (draft vocabulary); use a tree with ranks below {proposed} "
                         f"(e.g. Tree.default({mm.num_heads})) or a larger draft vocabulary (set_draft_vocab)")


def draft(mm, tree: Tree, h: torch.Tensor, root: int) -> torch.Tensor:
    """[N] token of every node, from the root token and the heads at hidden state h [1, H].

    Medusa heads: head k's top-k fill depth k+1 (`Tree.candidates`). Hydra heads: node by node.
    """
    if mm.heads.reads_path:
        return hydra_candidates(mm, tree, h, root)
    topk = mm.head_topk(h, max(1, tree.max_rank))[:, 0]  # [K, topk]
    return tree.candidates(root, topk)


def hydra_candidates(mm, tree: Tree, h: torch.Tensor, root: int) -> torch.Tensor:
    """[N] token of every node with Hydra heads: each node's children come from its own top-k.

    Depth by depth: the nodes of depth d that have children feed head d with h and the embeddings
    of their path (root .. the node itself, d+1 tokens), all as one batch; the child of rank r of
    a node takes the rank-r token of that node's own distribution (Ankner et al., 2024).
    """
    cand = torch.full((tree.num_nodes,), root, dtype=torch.long, device=h.device)  # [N]
    for d, (nodes, paths, row, rank) in enumerate(tree.levels()):  # nodes at depth d+1
        prev = cand[paths.to(h.device)]  # [P, d+1] path tokens of the P parents at depth d
        top = mm.topk_along(h.expand(len(paths), -1), d, prev, max(1, tree.max_rank))  # [P, topk]
        cand[nodes.to(h.device)] = top[row.to(h.device), rank.to(h.device)]
    return cand


# ----------------------------------------------------------------------------- token trees


def token_tree(root: int, sequences: list[list[int]], budget: int | None = None, device=None) -> Draft:
    """A trie of token sequences under `root`: shared prefixes become one path, siblings are ranked in
    the order they first appear. At most `budget` nodes besides the root (earlier sequences first)."""
    rank_path: dict[tuple[int, ...], tuple[int, ...]] = {(): ()}  # token prefix -> rank path
    token_of: dict[tuple[int, ...], int] = {}  # rank path -> token
    kids: dict[tuple[int, ...], int] = {}  # rank path -> children so far
    for seq in sequences:
        for d in range(len(seq)):
            prefix = tuple(seq[: d + 1])
            if prefix in rank_path:
                continue
            if budget is not None and len(token_of) >= budget:
                break
            parent = rank_path[prefix[:-1]]
            path = parent + (kids.get(parent, 0),)
            kids[parent] = kids.get(parent, 0) + 1
            rank_path[prefix], token_of[path] = path, seq[d]
    tree = Tree.from_choices([list(p) for p in token_of], topk=max(kids.values(), default=1))
    tokens = torch.tensor([root] + [token_of[p] for p in tree.paths], dtype=torch.long, device=device)
    return Draft(tree, tokens)


# ----------------------------------------------------------------------------- prompt lookup


def lookup(ids: list[int], max_ngram: int = 3, depth: int = 10, branches: int = 3) -> list[list[int]]:
    """Continuations (up to `depth` tokens) of the longest suffix n-gram of `ids` (n <= max_ngram) that
    occurred earlier in `ids`, latest occurrence first, at most `branches` distinct ones."""
    for n in range(min(max_ngram, len(ids) - 1), 0, -1):
        suffix, found = ids[-n:], []
        for start in range(len(ids) - n - 1, -1, -1):  # every earlier occurrence, latest first
            if ids[start:start + n] == suffix:
                cont = ids[start + n:start + n + depth]
                if cont not in found:
                    found.append(cont)
                if len(found) == branches:
                    break
        if found:
            return found
    return []


class PromptLookupDrafter(Drafter):
    """Prompt lookup decoding: copy what followed the same n-gram earlier in the prompt or the output."""

    kind = "pld"

    def __init__(self, backbone, max_ngram: int = 3, depth: int = 10, branches: int = 3):
        if min(max_ngram, depth, branches) < 1:
            raise ValueError(f"max_ngram, depth and branches must be >= 1, got {max_ngram}, {depth}, {branches}")
        self.backbone = as_backbone(backbone)
        self.max_ngram, self.depth, self.branches = max_ngram, depth, branches

    def propose(self, h: torch.Tensor, root: int, context: list[int]) -> Draft:
        seqs = lookup(context + [root], self.max_ngram, self.depth, self.branches)
        return token_tree(root, seqs, device=h.device)


# ----------------------------------------------------------------------------- hybrid


class HybridDrafter(Drafter):
    """Two (or more) drafters in one verification forward: their trees merged, the node budget split by
    each one's acceptance (a running mean of the tokens it would have had accepted, plus a floor)."""

    kind = "hybrid"

    def __init__(self, drafters: list[Drafter], budget: int = 18, decay: float = 0.8, floor: float = 0.25):
        if len(drafters) < 2:
            raise ValueError("a hybrid needs at least two drafters")
        self.drafters, self.backbone = drafters, drafters[0].backbone
        self.budget, self.decay, self.floor = budget, decay, floor
        self.credit = [1.0] * len(drafters)
        self.last: list[Draft] = []

    def start(self, prompt: list[int]) -> None:
        for d in self.drafters:
            d.start(prompt)

    def shares(self) -> list[int]:
        """Nodes for each drafter: the budget split in proportion to (credit + floor), each at least 1."""
        weights = [c + self.floor for c in self.credit]
        return [max(1, round(self.budget * w / sum(weights))) for w in weights]

    def propose(self, h: torch.Tensor, root: int, context: list[int]) -> Draft:
        self.last = [d.propose(h, root, context) for d in self.drafters]
        merged: list[list[int]] = []
        for own, share in zip(self.last, self.shares()):  # each drafter's sequences, cut to its share of nodes
            merged += trim(own.sequences(), share)
        return token_tree(root, merged, device=h.device)

    def accepted(self, draft: Draft, path: list[int]) -> None:
        got = draft.tokens[path[1:]].tolist()  # the accepted tokens after the root
        for i, (d, own) in enumerate(zip(self.drafters, self.last)):
            hits = max((common_prefix(seq, got) for seq in own.sequences()), default=0)
            self.credit[i] = self.decay * self.credit[i] + (1 - self.decay) * hits
            d.accepted(own, path_in(own, got))


def heads_with_lookup(mm, tree: Tree | None = None) -> HybridDrafter:
    """The shipped hybrid: `mm`'s heads on `tree` (default `Tree.default`) and prompt lookup, with room for the
    tree and one whole prompt-lookup chain, split by what each gets accepted."""
    heads, pld = HeadsDrafter(mm, tree), PromptLookupDrafter(mm)
    return HybridDrafter([heads, pld], budget=heads.tree.num_nodes + pld.depth)


def trim(seqs: list[list[int]], nodes: int) -> list[list[int]]:
    """The sequences cut so that their trie has at most `nodes` nodes (earlier sequences first)."""
    return token_tree(0, seqs, budget=nodes).sequences() if seqs else []


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def path_in(draft: Draft, tokens: list[int]) -> list[int]:
    """The nodes of `draft` along `tokens` from the root, as far as they go."""
    path, kids = [0], draft.tree.children()
    for t in tokens:
        nxt = [k for k in kids[path[-1]] if draft.tokens[k].item() == t]
        if not nxt:
            break
        path.append(nxt[0])
    return path


# ----------------------------------------------------------------------------- the one entry point


def as_drafter(source, tree: Tree | None = None) -> Drafter:
    """What `medusa_generate` decodes with: a `Drafter` as it is, or a `MedusaModel`'s heads on `tree`."""
    if isinstance(source, Drafter):
        if tree is not None and not isinstance(source, HeadsDrafter):
            raise ValueError(f"a {source.kind} drafter builds its own tree each step; pass no tree")
        return HeadsDrafter(source.mm, tree) if tree is not None else source
    return HeadsDrafter(source, tree)

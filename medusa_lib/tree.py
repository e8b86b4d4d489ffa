"""Candidate trees and tree attention (Cai et al., 2024, Sec. 2.1.2 and 2.3.3).

A tree is a set of paths in Medusa's notation: `[0, 1]` means "head 1's top-1 token, then
head 2's top-2 token". Node 0 is the root: the token the base model itself predicted, which is
always correct. Node i > 0 is path i-1, at depth len(path), and may only attend to its
ancestors. All nodes are verified in one forward pass under a float 4D mask, with position ids
given by depth, and the longest path the base model agrees with is kept.

Medusa heads fill a whole depth from one top-k (`candidates`); Hydra heads draft node by node,
each node's children from its own top-k (`levels` gives each depth's parents, paths and ranks).

`Tree.from_accuracies` grows a tree greedily from measured head top-k accuracies, maximising the
expected accepted length (the paper's Sec. 2.3.3 tree search).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass
class Tree:
    paths: list[tuple[int, ...]]  # node i+1 is paths[i]; sorted by (depth, path)
    num_heads: int | None = None  # if given, depth may not exceed it
    topk: int = 10  # the largest rank a head proposes
    _index: dict = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.paths = as_paths(self.paths)
        self._validate()
        self.paths = sorted(self.paths, key=lambda p: (len(p), p))
        self._index = {(): 0, **{p: i + 1 for i, p in enumerate(self.paths)}}
        self._cache = {}  # buffers are derived once; a Tree is not mutated after construction

    def _cached(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @classmethod
    def from_choices(cls, choices, num_heads: int | None = None, topk: int = 10) -> "Tree":
        return cls(choices, num_heads=num_heads, topk=topk)

    def _validate(self):
        seen = set()
        for p in self.paths:
            if len(p) == 0:
                raise ValueError("empty path: the root is implicit, list only paths of length >= 1")
            if p in seen:
                raise ValueError(f"duplicate path {list(p)}")
            seen.add(p)
            if any(r < 0 or r >= self.topk for r in p):
                raise ValueError(f"path {list(p)} has a rank outside top-{self.topk} (ranks are 0..{self.topk - 1})")
            if self.num_heads is not None and len(p) > self.num_heads:
                raise ValueError(f"path {list(p)} has depth {len(p)} but there are only {self.num_heads} heads")
        for p in self.paths:
            if len(p) > 1 and p[:-1] not in seen:
                raise ValueError(f"path {list(p)} needs its prefix {list(p[:-1])}, which is missing")

    # -- structure -----------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        """Nodes verified per step, root included."""
        return len(self.paths) + 1

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths), default=0)

    @property
    def max_rank(self) -> int:
        """Largest top-k any head must provide."""
        return max((r for p in self.paths for r in p), default=-1) + 1

    def node_depths(self) -> torch.Tensor:  # [N]
        return self._cached("depths", lambda: torch.tensor([0] + [len(p) for p in self.paths]))

    def parents(self) -> list[int]:  # parent node of each node (root: -1)
        return self._cached("parents", lambda: [-1] + [self._index[p[:-1]] for p in self.paths])

    def ranks(self) -> list[int]:  # rank of each node among its parent's proposals (root: -1)
        return self._cached("ranks", lambda: [-1] + [p[-1] for p in self.paths])

    def levels(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per depth d = 1..depth, what drafting node by node needs (Hydra heads): (nodes, paths, row, rank).

        nodes [n]: the nodes at depth d; paths [P, d]: the root-to-parent node path of each of their P
        distinct parents; node nodes[i] is the rank[i]-th proposal of the parent in row row[i] of paths.
        """
        return self._cached("levels", lambda: [self._level(d) for d in range(1, self.depth + 1)])

    def _level(self, d: int):
        parents, ranks = self.parents(), self.ranks()
        nodes = [i for i in range(1, self.num_nodes) if len(self.paths[i - 1]) == d]
        distinct = sorted({parents[i] for i in nodes})
        row = {p: j for j, p in enumerate(distinct)}
        return (torch.tensor(nodes), torch.tensor([self.ancestors(p) for p in distinct]),
                torch.tensor([row[parents[i]] for i in nodes]), torch.tensor([ranks[i] for i in nodes]))

    def children(self) -> list[list[int]]:
        """Child nodes of every node, ordered by rank (what the acceptance walk tries first)."""
        return self._cached("children", self._children)

    def _children(self) -> list[list[int]]:
        kids = [[] for _ in range(self.num_nodes)]
        for i, par in enumerate(self.parents()[1:], start=1):
            kids[par].append(i)
        return [sorted(k, key=lambda i: self.paths[i - 1][-1]) for k in kids]

    def ancestors(self, node: int) -> list[int]:
        """Nodes on the root path of `node`, root first, `node` last."""
        p = () if node == 0 else self.paths[node - 1]
        return [self._index[p[:d]] for d in range(len(p) + 1)]

    def leaves(self) -> list[int]:
        return [i for i, k in enumerate(self.children()) if not k]

    # -- buffers for verification ---------------------------------------------------------------

    def ancestor_mask(self) -> torch.Tensor:
        """[N, N] bool: node i may attend to node j (j is i or an ancestor of i)."""
        return self._cached("ancestor_mask", self._ancestor_mask)

    def _ancestor_mask(self) -> torch.Tensor:
        m = torch.zeros(self.num_nodes, self.num_nodes, dtype=torch.bool)
        for i in range(self.num_nodes):
            m[i, self.ancestors(i)] = True
        return m

    def attention_mask(self, past_len: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """[1, 1, N, past_len + N] float mask: 0 where visible, finfo.min elsewhere.

        Float, not bool: a bool 4D mask with eager attention gives wrong logits silently.
        """
        visible = torch.cat([torch.ones(self.num_nodes, past_len, dtype=torch.bool), self.ancestor_mask()], 1)
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        return mask[None, None].to(device)

    def position_ids(self, past_len: int, device=None) -> torch.Tensor:  # [1, N]
        return (past_len + self.node_depths())[None].to(device)

    def tree_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(head, rank) that proposes each non-root node: node i's token is topk[head[i], rank[i]]."""
        return self._cached("tree_indices", lambda: (
            torch.tensor([len(p) - 1 for p in self.paths], dtype=torch.long),
            torch.tensor([p[-1] for p in self.paths], dtype=torch.long)))

    def retrieve_indices(self) -> torch.Tensor:
        """[num_leaves, depth+1] root-to-leaf node paths, padded with -1 (Medusa's buffer)."""
        rows = [self.ancestors(leaf) for leaf in self.leaves()]
        out = torch.full((len(rows), self.depth + 1), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def candidates(self, root_token: int, topk: torch.Tensor) -> torch.Tensor:
        """[N] token of every node, from the root token and the heads' top-k ids [K, >=max_rank]."""
        heads, ranks = self.tree_indices()
        return torch.cat([torch.tensor([root_token], device=topk.device), topk[heads, ranks]])

    # -- standard trees -------------------------------------------------------------------------

    @classmethod
    def chain(cls, depth: int) -> "Tree":
        """Top-1 of each head: the cheapest tree (depth + 1 nodes)."""
        return cls([tuple([0] * d) for d in range(1, depth + 1)], num_heads=depth)

    @classmethod
    def default(cls, num_heads: int) -> "Tree":
        """A small tree that suits a CPU: about 8 nodes, whatever the head count."""
        return cls.standard(num_heads, 8)

    @classmethod
    def standard(cls, num_heads: int, n_nodes: int) -> "Tree":
        """A standard tree of `n_nodes` nodes (root included) for any number of heads.

        Grown from `standard_accuracies` (top-1 falling with depth, top-k falling with rank), so
        the trees for different sizes are nested. With one head a tree has at most 1 + topk nodes.
        `mc_sim_7b_63` is the paper's tree for 4 heads.
        """
        if num_heads < 1:
            raise ValueError(f"a standard tree needs at least 1 head, got {num_heads}")
        acc = standard_accuracies(num_heads)
        return cls.from_accuracies(acc, n_nodes)

    @classmethod
    def mc_sim_7b_63(cls) -> "Tree":
        return cls(MC_SIM_7B_63, num_heads=4)

    @classmethod
    def from_accuracies(cls, acc, n_nodes: int) -> "Tree":
        """Grow the tree that maximises expected accepted length, given acc[K, topk].

        acc is what `evaluate.head_accuracy` measures: acc[k, i] = P(head k's top-(i+1) holds the
        right token), cumulative over ranks. The rank-i token is right with probability
        acc[k, i] - acc[k, i-1]; a node's value is the product of those along its path. Adding the
        most valuable frontier node each time gives the optimal tree for this model of independent
        heads (values only shrink along a path, so the greedy choice is exact).
        """
        p = rank_probs(acc)
        K, topk = p.shape
        if n_nodes < 1:
            raise ValueError("a tree has at least the root node")
        chosen, frontier = [], {(i,): p[0, i].item() for i in range(topk)}
        while len(chosen) < n_nodes - 1 and frontier:
            best = max(frontier, key=lambda q: (frontier[q], [-r for r in q]))
            value = frontier.pop(best)
            chosen.append(best)
            if len(best) < K:
                for i in range(topk):
                    frontier[best + (i,)] = value * p[len(best), i].item()
        return cls(chosen, num_heads=K, topk=topk)


CHOICES_HINT = "choices must be a list of lists of ranks, e.g. [[0], [0, 0], [1]]"


def as_paths(choices) -> list[tuple[int, ...]]:
    """Choices -> paths as tuples of int ranks. Strings, numbers and float ranks fail, naming the fix."""
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable):
        raise TypeError(f"{CHOICES_HINT}; got {choices!r}")
    paths = []
    for p in choices:
        if isinstance(p, (str, bytes)) or not isinstance(p, Iterable):
            raise TypeError(f"{CHOICES_HINT}; got the path {p!r}")
        paths.append(tuple(_as_rank(r, p) for r in p))
    return paths


def _as_rank(r, path) -> int:
    """A rank is a whole number: 1.0, 0.5 and True are refused rather than truncated."""
    if not isinstance(r, bool):
        try:
            return operator.index(r)  # int, numpy or 0-d tensor integers; never a float
        except TypeError:
            pass
    raise TypeError(f"path {list(path)!r} has rank {r!r} ({type(r).__name__}); ranks are whole numbers "
                    f"(0 = a head's top-1), e.g. [[0], [0, 0], [1]]")


def rank_probs(acc) -> torch.Tensor:
    """Cumulative top-k accuracies [K, topk] -> P(the rank-i token is right) [K, topk]."""
    acc = torch.as_tensor(acc, dtype=torch.float64)
    return torch.diff(acc, dim=1, prepend=torch.zeros(acc.shape[0], 1, dtype=acc.dtype)).clamp(min=0)


def expected_accept_length(tree: Tree, acc) -> float:
    """Expected tokens per step, root included: 1 + sum over nodes of P(path accepted).

    acc is cumulative top-k accuracy [K, topk], as `evaluate.head_accuracy` returns it.
    """
    p = rank_probs(acc)
    total = 1.0
    for path in tree.paths:
        prob = 1.0
        for d, r in enumerate(path):
            prob *= p[d, r].item() if d < p.shape[0] and r < p.shape[1] else 0.0
        total += prob
    return total


def fastest_tree(acc, costs: dict, draft_cost: float | dict = 0.0) -> tuple[Tree, list[dict]]:
    """The tree grown from `acc` that is expected to decode fastest on the hardware behind `costs`.

    costs[n] is the time of one verification over n nodes (the forward and the logits at every node)
    relative to one plain greedy step, and
    `draft_cost` the heads' own drafting per step on the same scale: one number, or {n: cost} when it
    grows with the tree, as Hydra's does (`evaluate.verify_costs` measures both). Tokens per second
    relative to plain decoding are then about E[tau](n) / (costs[n] + draft(n)).
    A CPU's cost rises quickly with n and a GPU's hardly at all, so the
    same heads get a small tree on a CPU and a large one on a GPU (Medusa paper, Sec. 2.3.3 and
    Fig. 3b). Returns the tree and one row per size: nodes, verify, drafting, cost (their sum),
    expected_tau, expected_speedup.
    """
    if not costs:
        raise ValueError("fastest_tree needs the verification cost of at least one tree size")
    rows = []
    for n, cost in sorted(costs.items()):
        tau = expected_accept_length(Tree.from_accuracies(acc, n), acc)
        drafting = float(draft_cost[n] if isinstance(draft_cost, dict) else draft_cost)
        step = float(cost) + drafting
        rows.append({"nodes": n, "verify": float(cost), "drafting": drafting, "cost": step,
                     "expected_tau": tau, "expected_speedup": tau / step})
    best = max(rows, key=lambda r: r["expected_speedup"])
    return Tree.from_accuracies(acc, best["nodes"]), rows


def standard_accuracies(num_heads: int, topk: int = 10):
    """Cumulative acc[K, topk] of plausible heads, the shape the standard trees are grown from.

    Head k's top-1 falls with depth (0.6, 0.4, 0.3, 0.25, 0.2, then a fifth less each head). The ranks below
    share 60% of the rest, each rank 0.55 times the one above, so every row is a probability table that
    stays below 1: head 1 reaches 0.82 at top-5, close to what trained heads measure."""
    top1 = torch.tensor([0.6, 0.4, 0.3, 0.25, 0.2] + [0.2 * 0.8**k for k in range(1, num_heads - 4)],
                        dtype=torch.float64)[:num_heads]  # [K]
    share = 0.45 * 0.55 ** torch.arange(topk - 1, dtype=torch.float64)  # [topk-1], sums to below 1
    below = 0.6 * (1 - top1)[:, None] * share[None, :]  # [K, topk-1] P(the right token is rank 2, 3, ...)
    return torch.cat([top1[:, None], below], 1).cumsum(1)


# The paper's sparse tree for Vicuna-7B with 4 heads (63 nodes + root), FasterDecoding/Medusa's
# medusa_choices.py.
MC_SIM_7B_63 = [
    [0], [0, 0], [1], [0, 1], [2], [0, 0, 0], [1, 0], [0, 2], [3], [0, 3], [4], [0, 4], [2, 0], [0, 5],
    [0, 0, 1], [5], [0, 6], [6], [0, 7], [0, 1, 0], [1, 1], [7], [0, 8], [0, 0, 2], [3, 0], [0, 9], [8], [9],
    [1, 0, 0], [0, 2, 0], [1, 2], [0, 0, 3], [4, 0], [2, 1], [0, 0, 4], [0, 0, 5], [0, 0, 0, 0], [0, 1, 1],
    [0, 0, 6], [0, 3, 0], [5, 0], [1, 3], [0, 0, 7], [0, 0, 8], [0, 0, 9], [6, 0], [0, 4, 0], [1, 4], [7, 0],
    [0, 1, 2], [2, 0, 0], [3, 1], [2, 2], [8, 0], [0, 5, 0], [1, 5], [1, 0, 1], [0, 2, 1], [9, 0], [0, 6, 0],
    [0, 0, 0, 1], [1, 6], [0, 7, 0],
]

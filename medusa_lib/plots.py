"""Figures for the Medusa tutorial.

Every `plot_*` function takes plain data (lists, dicts, arrays, a `Tree`, a `GenerateOutput`'s
fields) and returns a matplotlib `Figure`; none calls `plt.show()`, so the notebooks display the
figure and scripts pass it to `save_fig`. Functions that draw a single panel also take `ax=` so
they can be composed into one figure. All share one look: `STYLE` and `_style`, which gives every
axes a title and axis labels.

Two small ipywidgets explorers sit on top:

- `GenerationExplorer(out, tree, tokenizer)`: step through a `medusa_generate(..., record=True)`
  run; each step shows the candidate tree with its tokens, the accepted path and the tree mask.
- `TreeExplorer(acc)`: grow `Tree.from_accuracies(acc, n)` for a chosen node count and see the
  expected acceptance length.

Both render into PNG outputs set directly on an `Output` widget, so they work (and are testable)
without a browser or a running kernel.

`show_acceptance(split_steps(out.new_tokens, out.accept_lengths), tokenizer)` shows the generated text
with each token coloured by how many tokens its step emitted: HTML in a notebook, brackets as plain text.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from medusa_lib.tree import Tree, expected_accept_length

STYLE = {
    "figsize": (6.4, 3.6),
    "dpi": 120,
    "widget_dpi": 90,
    "title_size": 11,
    "label_size": 9,
    "tick_size": 8,
    "grid_alpha": 0.3,
    "colors": plt.get_cmap("tab10").colors,
    "accent": "#d62728",  # the accepted path, the mean, the fastest point
    "node": "#deebf7",
    "node_edge": "#6baed6",
    "edge": "#b0b0b0",
    "mask": "Blues",
}


def _style(ax, title: str, xlabel: str, ylabel: str, grid: bool = True):
    """Title, axis labels, tick size and grid: the one look every figure shares."""
    ax.set_title(title, fontsize=STYLE["title_size"])
    ax.set_xlabel(xlabel, fontsize=STYLE["label_size"])
    ax.set_ylabel(ylabel, fontsize=STYLE["label_size"])
    ax.tick_params(labelsize=STYLE["tick_size"])
    if grid:
        ax.grid(alpha=STYLE["grid_alpha"])
        ax.set_axisbelow(True)
    return ax


def _axes(ax=None, figsize=None):
    """(fig, ax): the given axes' figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize or STYLE["figsize"])
    return fig, ax


def _legend(ax, outside: bool = False, **kw):
    """A small legend; `outside` puts it right of the axes so it never covers data."""
    if outside:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), **kw}
    return ax.legend(fontsize=STYLE["tick_size"], frameon=False, **kw)


def _text(s, width: int = 10) -> str:
    """Token text safe for a figure: visible newlines, no mathtext, at most `width` characters."""
    s = str(s).replace("\n", "\\n").replace("\t", "\\t").replace("$", r"\$")
    return s if len(s) <= width else s[: width - 1] + "…"


def node_names(tree: Tree) -> list[str]:
    """A name per node: "root", then the path ranks joined by "-" ("0", "0-1", ...)."""
    return ["root"] + ["-".join(str(r) for r in p) for p in tree.paths]


# ----------------------------------------------------------------------------- the big picture

# One Medusa decoding step, stage by stage: (name, what happens there).
STAGES = (("heads", "guess the next\nfew tokens"),
          ("tree", "their top-k guesses\nform a tree"),
          ("mask", "each node sees\nits ancestors only"),
          ("verify", "one forward pass\nover every node"),
          ("accept", "keep the longest\ncorrect path"))


def _stage_index(stage) -> int:
    """A stage's position in STAGES, from its name or its index."""
    names = [name for name, _ in STAGES]
    if isinstance(stage, str) and stage in names:
        return names.index(stage)
    if isinstance(stage, (int, np.integer)) and not isinstance(stage, bool) and 0 <= stage < len(names):
        return int(stage)
    raise ValueError(f"unknown stage {stage!r}: use one of {names} or an index 0-{len(names) - 1}")


def _stage_box(ax, i: int, on: bool, dim: bool) -> None:
    """Box i of the schematic: the stage's name and what it does, accent-filled when highlighted."""
    name, note = STAGES[i]
    x, alpha = 2.2 * i, 0.45 if dim else 1.0
    ax.add_patch(FancyBboxPatch((x - 0.95, -0.5), 1.9, 1.0, boxstyle="round,pad=0.05", alpha=alpha, gid=name,
                                fc=STYLE["accent"] if on else STYLE["node"],
                                ec=STYLE["accent"] if on else STYLE["node_edge"], lw=2 if on else 1))
    color = "white" if on else "black"
    ax.text(x, 0.2, name, ha="center", va="center", fontsize=STYLE["title_size"], weight="bold", color=color,
            alpha=alpha)
    ax.text(x, -0.17, note, ha="center", va="center", fontsize=STYLE["tick_size"], color=color, alpha=alpha)
    if i + 1 < len(STAGES):
        ax.annotate("", xy=(x + 1.22, 0), xytext=(x + 0.98, 0), arrowprops=dict(arrowstyle="-|>", color="gray"))


def plot_schematic(highlight=None, ax=None):
    """One Medusa decoding step as five boxes: heads -> tree -> mask -> verify -> accept, then repeat.

    `highlight` names the stage(s) to emphasise (a name, an index, or a list of them); the others
    are dimmed, so the figure doubles as a "where we are" strip. Unknown stages raise ValueError."""
    if highlight is None:
        on = set()
    else:
        many = isinstance(highlight, (list, tuple, set))
        on = {_stage_index(s) for s in (highlight if many else [highlight])}
    fig, ax = _axes(ax, figsize=(10, 2.3))
    for i in range(len(STAGES)):
        _stage_box(ax, i, i in on, bool(on) and i not in on)
    last = 2.2 * (len(STAGES) - 1)
    ax.annotate("", xy=(0, -0.55), xytext=(last, -0.55),  # accept feeds the next step's heads
                arrowprops=dict(arrowstyle="-|>", color="gray", connectionstyle="bar,fraction=-0.06"))
    ax.text(last / 2, -1.15, "next step: the heads read the hidden state of the last accepted token",
            ha="center", va="center", fontsize=STYLE["tick_size"], color="gray")
    ax.set_xlim(-1.1, last + 1.1)
    ax.set_ylim(-1.35, 0.65)
    ax.axis("off")
    where = ", ".join(STAGES[i][0] for i in sorted(on))
    ax.set_title("One Medusa decoding step" + (f" (where we are: {where})" if on else ""),
                 fontsize=STYLE["title_size"])
    return fig


def _box(ax, x, y, text, w=1.6, h=0.55, fc=None):
    """A rounded box centred at (x, y) with `text` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=fc or STYLE["node"],
                                ec=STYLE["node_edge"]))
    ax.text(x, y, text, ha="center", va="center", fontsize=STYLE["tick_size"])


def _arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color="gray", lw=1))


def plot_architecture(tree: Tree | None = None, past_len: int = 3):
    """Medusa at a glance, in three panels (Cai et al., 2024, Fig. 1 and Sec. 2.1-2.3):

    1. the heads: the backbone's last hidden state h_t feeds its own lm_head (token t+1) and K heads
       (head k: token t+k+1), each offering its top-k guesses;
    2. the candidate tree those guesses form (`tree`, default a 6-node one);
    3. the tree flattened after the `past_len` cached tokens, with its attention mask and the position id
       of every node (its depth after the root): one forward pass verifies every path."""
    tree = tree or Tree.from_choices([[0], [1], [0, 0], [1, 0], [0, 0, 0]])
    K = tree.depth
    fig, (a_heads, a_tree, a_mask) = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [4, 3, 3]})
    _box(a_heads, 0, 0, "backbone\n(frozen)", w=1.3, h=1.2, fc="#eeeeee")
    _box(a_heads, 1.9, 0, "$h_t$", w=0.7)
    _arrow(a_heads, (0.65, 0), (1.55, 0))
    rows = [("lm_head", "token t+1: the root")] + [(f"head {k}", f"token t+{k + 1}: top-k guesses")
                                                  for k in range(1, K + 1)]
    for i, (name, says) in enumerate(rows):
        y = 1.2 - 2.4 * i / max(1, len(rows) - 1)
        _box(a_heads, 3.5, y, name, w=1.2, h=0.45, fc="#eeeeee" if i == 0 else None)
        _arrow(a_heads, (2.25, 0), (2.9, y))
        a_heads.text(4.2, y, says, va="center", fontsize=STYLE["tick_size"])
    a_heads.set_xlim(-0.8, 6.6)
    a_heads.set_ylim(-1.6, 1.6)
    a_heads.axis("off")
    a_heads.set_title("1. K heads read the last hidden state", fontsize=STYLE["title_size"])
    plot_tree(tree, ax=a_tree)
    a_tree.set_title("2. their guesses form a tree", fontsize=STYLE["title_size"])
    pos = tree.position_ids(past_len)[0].tolist()  # [N] past_len + depth
    plot_tree_mask(tree, past_len=past_len, labels=[f"{n} @{q}" for n, q in zip(node_names(tree), pos)], ax=a_mask)
    a_mask.set_title(f"3. flattened after {past_len} cached tokens\n(label: node @ position id)",
                     fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- heads and acceptance


def plot_head_accuracy(acc, topk=(1, 5), labels=None, ax=None):
    """Grouped bars of cumulative top-k accuracy per head; acc[k, i] = P(truth in head k's top-(i+1))."""
    acc = np.asarray(acc, dtype=float)
    K, T = acc.shape
    cols = [k for k in topk if 1 <= k <= T]
    labels = labels or [f"head {k + 1}" for k in range(K)]
    fig, ax = _axes(ax)
    x, width = np.arange(K), 0.8 / max(1, len(cols))
    for j, k in enumerate(cols):
        bars = ax.bar(x + (j - (len(cols) - 1) / 2) * width, acc[:, k - 1], width, label=f"top-{k}",
                      color=STYLE["colors"][j])
        ax.bar_label(bars, fmt="%.2f", fontsize=STYLE["tick_size"] - 1)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.1)
    _style(ax, "Medusa head accuracy", "head k guesses the token k places after the base model's next", "accuracy")
    _legend(ax, outside=True)
    return fig


def plot_topk_curves(acc, labels=None, ax=None):
    """Cumulative top-k accuracy against k, one line per head; acc[k, i] = P(truth in head k's top-(i+1)).

    The curve's rise says how much a wider tree (more guesses per head) can still gain."""
    acc = np.asarray(acc, dtype=float)
    K, T = acc.shape
    labels = labels or [f"head {k + 1}" for k in range(K)]
    fig, ax = _axes(ax)
    ks = np.arange(1, T + 1)
    for k in range(K):
        ax.plot(ks, acc[k], marker="o", ms=3, color=STYLE["colors"][k % len(STYLE["colors"])], label=labels[k])
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    _style(ax, "Top-k accuracy per head", "k: the true token is among the head's k best guesses", "accuracy")
    _legend(ax, outside=True)
    return fig


def plot_accept_hist(accept_lengths, ax=None):
    """Histogram of tokens emitted per step (the root, always right, plus the accepted guesses), mean τ marked."""
    a = np.asarray(accept_lengths, dtype=float)
    fig, ax = _axes(ax)
    top = int(a.max()) if a.size else 1
    ax.hist(a, bins=np.arange(0.5, top + 1.5), rwidth=0.85, color=STYLE["colors"][0])
    tau = float(a.mean()) if a.size else 0.0
    ax.axvline(tau, color=STYLE["accent"], ls="--", lw=1.5, label=f"mean τ = {tau:.2f}")
    ax.set_xticks(range(1, top + 1))
    _style(ax, f"Tokens emitted per step: root + accepted guesses ({a.size} steps)", "tokens per step", "steps")
    _legend(ax, loc="upper right")  # acceptance counts fall with length: the upper right is empty
    return fig


def plot_accept_trace(accept_lengths, window: int = 8, ax=None):
    """Tokens per step over the generation, with a moving average of `window` steps."""
    a = np.asarray(accept_lengths, dtype=float)
    fig, ax = _axes(ax, figsize=(8, 3.2))
    steps = np.arange(1, a.size + 1)
    ax.plot(steps, a, marker=".", lw=0.8, alpha=0.5, color=STYLE["colors"][0], label="per step")
    w = max(1, min(window, a.size))
    if a.size:
        avg = np.convolve(a, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], avg, lw=2, color=STYLE["colors"][1], label=f"moving mean ({w} steps)")
        ax.axhline(a.mean(), color=STYLE["accent"], ls=":", lw=1.2, label=f"τ = {a.mean():.2f}")
    ax.set_ylim(0, max(2.0, a.max() + 0.5) if a.size else 2.0)
    _style(ax, "Acceptance over the generation", "decoding step", "tokens per step")
    _legend(ax, outside=True)
    return fig


# ----------------------------------------------------------------------------- trees


def plot_tree_mask(tree: Tree, past_len: int = 0, labels=None, accepted=None, ax=None):
    """Heatmap of which node attends to which: the past (all visible) then the tree's ancestor mask."""
    names = [_text(s) for s in (labels if labels is not None else node_names(tree))]
    vis = (tree.attention_mask(past_len)[0, 0] == 0).numpy()
    N, C = vis.shape
    side = min(10.0, 2.5 + 0.28 * C)
    fig, ax = _axes(ax, figsize=(side, min(10.0, 2.0 + 0.28 * N)))
    ax.imshow(vis, cmap=STYLE["mask"], vmin=0, vmax=1.25, aspect="equal", interpolation="nearest")
    small = STYLE["tick_size"] if C <= 20 else 5
    ax.set_xticks(range(C), [f"p{i}" for i in range(past_len)] + names, rotation=90, fontsize=small)
    ax.set_yticks(range(N), names, fontsize=small)
    ax.set_xticks(np.arange(-0.5, C), minor=True)
    ax.set_yticks(np.arange(-0.5, N), minor=True)
    ax.grid(which="minor", color="white", lw=0.5)
    ax.tick_params(which="minor", length=0)
    if past_len:
        ax.axvline(past_len - 0.5, color=STYLE["accent"], lw=1)
    for i in accepted or []:  # accepted nodes: red row labels
        ax.get_yticklabels()[i].set_color(STYLE["accent"])
    _style(ax, f"Tree attention mask ({N} nodes)", "key: attended-to token", "query: tree node", grid=False)
    return fig


def _tree_layout(tree: Tree) -> tuple[np.ndarray, np.ndarray]:
    """Node positions: x = depth, leaves spread down in rank order, a parent between its children."""
    kids, y, leaf = tree.children(), {}, iter(range(tree.num_nodes))

    def place(i):
        for c in kids[i]:
            place(c)
        y[i] = -float(next(leaf)) if not kids[i] else (y[kids[i][0]] + y[kids[i][-1]]) / 2

    place(0)
    x = np.asarray(tree.node_depths().tolist(), dtype=float)
    return x, np.array([y[i] for i in range(tree.num_nodes)])


def plot_tree(tree: Tree, tokens=None, accepted=None, bonus=None, ax=None):
    """The candidate tree: nodes labelled by rank (or token text), the accepted path in red, and `bonus` (the
    token text the verify pass gives after that path, the next step's root) as a dashed node beyond its end."""
    x, y = _tree_layout(tree)
    n_leaves = len(tree.leaves())
    fig, ax = _axes(ax, figsize=(min(12.0, 2.0 + 1.8 * (tree.depth + 1)), min(12.0, 1.5 + 0.4 * n_leaves)))
    on = set(accepted or [])
    for i, par in enumerate(tree.parents()):
        if par >= 0:
            hit = i in on and par in on
            ax.plot([x[par], x[i]], [y[par], y[i]], color=STYLE["accent"] if hit else STYLE["edge"],
                    lw=2.5 if hit else 1, zorder=1 + hit)
    names = ["root"] + [str(p[-1]) for p in tree.paths] if tokens is None else [_text(t) for t in tokens]
    if tokens is not None:
        names[0] = f"root: {names[0]}"  # the backbone's own token, always right (it may be any text, even ```)
    size = STYLE["label_size"] if tree.num_nodes <= 24 else 6
    for i in range(tree.num_nodes):
        hit = i in on
        ax.text(x[i], y[i], names[i], ha="center", va="center", fontsize=size, zorder=3,
                color="white" if hit else "black",
                bbox=dict(boxstyle="round,pad=0.25", fc=STYLE["accent"] if hit else STYLE["node"],
                          ec=STYLE["accent"] if hit else STYLE["node_edge"]))
    if bonus is not None and on:
        last = max(on)  # nodes are numbered depth by depth, so the deepest accepted node has the largest index
        _bonus_node(ax, x[last], y[last], _text(bonus))
    ax.set_xticks(range(tree.depth + 1), ["root"] + [f"head {d}" for d in range(1, tree.depth + 1)])
    ax.set_xlim(-0.5, tree.depth + 0.5 + (bonus is not None and bool(on)))
    ax.set_ylim(y.min() - 0.7, 0.7)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    what = "token" if tokens is not None else "rank"
    title = f"Candidate tree ({tree.num_nodes} nodes; label = {what}" + ("; accepted in red)" if on else ")")
    _style(ax, title, "depth (which head proposes the token)", "candidates, by rank", grid=False)
    return fig


def _bonus_node(ax, x: float, y: float, text: str) -> None:
    """The bonus token beside the last accepted node: emitted with the path, but never a guess."""
    ax.plot([x, x + 1], [y, y], color=STYLE["accent"], lw=1.5, ls="--", zorder=1)
    ax.text(x + 1, y, f"bonus: {text}", ha="center", va="center", fontsize=STYLE["label_size"], zorder=3,
            bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=STYLE["accent"], ls="--"))


# ----------------------------------------------------------------------------- benchmarks


def plot_verify_cost(costs, ax=None):
    """t(n)/t(1) against n (log-log): one forward of n tokens over a cache, relative to one token.

    `costs` maps n to the measured ratio; the dashed line is what n one-token forwards would cost
    (plain decoding), the dotted one a forward that costs the same whatever n."""
    n = sorted(costs)
    r = [float(costs[k]) for k in n]
    fig, ax = _axes(ax)
    ax.plot(n, n, ls="--", color="gray", lw=1, label="n forwards of 1 token (plain decoding)")
    ax.axhline(1.0, ls=":", color="gray", lw=1, label="same cost as 1 token")
    ax.plot(n, r, marker="o", color=STYLE["colors"][0], lw=2, label="one forward of n tokens (measured)")
    for k, v in zip(n, r):
        ax.annotate(f"{v:.2f}", (k, v), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=STYLE["tick_size"] - 1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(n, [str(k) for k in n])
    ax.set_yticks(n, [str(k) for k in n])
    ax.minorticks_off()
    _style(ax, "What a forward pass costs, by tokens fed at once", "tokens in the forward pass (n)",
           "time relative to 1 token, t(n)/t(1)")
    _legend(ax, outside=True)
    return fig


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def plot_speedup(rows, ax=None, key: str = "speedup"):
    """Grouped bars: speedup (or another `key` of the rows, such as "tau") per category, one bar per method;
    the dashed line is 1: no speedup, or for τ one token per step."""
    cats, methods = _unique(r["category"] for r in rows), _unique(r["method"] for r in rows)
    value = {(r["category"], r["method"]): float(r[key]) for r in rows}
    fig, ax = _axes(ax, figsize=(max(6.4, 1.2 * len(cats) + 3), 3.6))
    x, width = np.arange(len(cats)), 0.8 / max(1, len(methods))
    unit = "×" if key == "speedup" else ""
    for j, m in enumerate(methods):
        h = [value.get((c, m), np.nan) for c in cats]
        bars = ax.bar(x + (j - (len(methods) - 1) / 2) * width, h, width, label=m,
                      color=STYLE["colors"][j % len(STYLE["colors"])])
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}{unit}" for v in h],
                     fontsize=STYLE["tick_size"] - 2, padding=1)
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="no speedup (1.0×)" if key == "speedup" else "1 token per step")
    ax.set_xticks(x, cats)
    ax.set_ylim(0, max([1.2] + [v * 1.15 for v in value.values()]))
    if key == "speedup":
        _style(ax, "Speedup over greedy decoding", "category", "speedup (×)")
    else:
        _style(ax, "τ by category" if key == "tau" else f"{key} by category", "category",
               "τ (tokens per step)" if key == "tau" else key)
    _legend(ax, outside=True)
    return fig


def plot_tree_sweep(rows, baseline: float | None = None):
    """Two panels against tree size: τ (measured; dashed: what the accuracies predict, `expected_tau`) and
    wall-clock tokens/s from 0, with plain greedy's tokens/s (`baseline`) as a line; the fastest starred."""
    fig, (a_tau, a_tps) = plt.subplots(1, 2, figsize=(11, 3.6))
    for j, name in enumerate(_unique(r.get("tree", "tree") for r in rows)):
        rs = sorted((r for r in rows if r.get("tree", "tree") == name), key=lambda r: r["nodes"])
        n = [r["nodes"] for r in rs]
        color = STYLE["colors"][j % len(STYLE["colors"])]
        a_tau.plot(n, [r["tau"] for r in rs], marker="o", color=color, label=f"{name}: measured")
        if all("expected_tau" in r for r in rs):
            a_tau.plot(n, [r["expected_tau"] for r in rs], ls="--", color=color, alpha=0.8,
                       label=f"{name}: expected from accuracies")
        a_tps.plot(n, [r["tokens_per_s"] for r in rs], marker="o", color=color, label=name)
    best = max(rows, key=lambda r: r["tokens_per_s"])
    ticks = sorted({r["nodes"] for r in rows})
    for ax, key in ((a_tau, "tau"), (a_tps, "tokens_per_s")):
        ax.plot(best["nodes"], best[key], marker="*", ms=16, color=STYLE["accent"], ls="", zorder=5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
    if baseline is not None:
        a_tps.axhline(baseline, color="gray", ls="--", lw=1, label=f"plain greedy: {baseline:.1f} tok/s")
    a_tps.set_ylim(0, 1.15 * max([r["tokens_per_s"] for r in rows] + [baseline or 0]))
    _style(a_tau, "Acceptance vs tree size", "tree nodes (log scale)", "τ (tokens per step)")
    _style(a_tps, "Throughput vs tree size", "tree nodes (log scale)", "tokens / s")
    label = f"fastest: {best.get('tree', '')} {best['nodes']} nodes, {best['tokens_per_s']:.1f} tok/s"
    a_tau.plot([], [], marker="*", ms=12, color=STYLE["accent"], ls="", label=label)
    _legend(a_tau, loc="upper left")
    if baseline is not None:
        _legend(a_tps, loc="lower right")
    fig.tight_layout()
    return fig


def plot_predicted_speedup(rows, ax=None):
    """Predicted (expected τ ÷ measured cost of a step, `tree.fastest_tree`) against measured speedup by tree
    size; `rows`: {nodes, predicted, measured}. Above the dotted line a tree beats plain greedy."""
    rows = sorted(rows, key=lambda r: r["nodes"])
    fig, ax = _axes(ax)
    n = [r["nodes"] for r in rows]
    ax.plot(n, [r["predicted"] for r in rows], marker="o", ls="--", color=STYLE["colors"][0],
            label="predicted: expected τ ÷ step cost")
    ax.plot(n, [r["measured"] for r in rows], marker="o", color=STYLE["colors"][1],
            label="measured: tokens/s ÷ greedy's")
    ax.axhline(1.0, color="gray", ls=":", lw=1, label="plain greedy (1.0×)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(v) for v in n])
    ax.minorticks_off()
    ax.set_ylim(0, 1.15 * max([1.0] + [r[k] for r in rows for k in ("predicted", "measured")]))
    _style(ax, "Predicted and measured speedup by tree size", "tree nodes (log scale)", "speedup over greedy (×)")
    _legend(ax, outside=True)
    return fig


STEP_PARTS = {"draft": ("heads",), "verify (forward + logits)": ("forward", "lm_head")}


def step_parts_ms(step_times: list[dict]) -> dict[str, float]:
    """Median milliseconds per step of each part of a step (`STEP_PARTS`, then the rest of the step: acceptance
    and cache bookkeeping). A plain greedy step records only its total, which is all model: its verify."""
    def median(key_sum):
        return float(np.median([1000 * key_sum(t) for t in step_times])) if step_times else 0.0
    if all(set(t) == {"total"} for t in step_times):  # greedy: one forward and one row of logits a step
        return {"draft": 0.0, "verify (forward + logits)": median(lambda t: t["total"]), "bookkeeping": 0.0}
    parts = {name: median(lambda t, ks=keys: sum(t.get(k, 0.0) for k in ks)) for name, keys in STEP_PARTS.items()}
    parts["bookkeeping"] = max(0.0, median(lambda t: t["total"]) - sum(parts.values()))
    return parts


def plot_step_times(runs: dict, ax=None):
    """Where a step's time goes, one stacked bar per method: `runs` maps a label to (step_times, τ). The text
    at each bar's end is its time per token (step ÷ τ); the dashed line is the first run's, plain greedy's."""
    fig, ax = _axes(ax, figsize=(8, 0.6 * len(runs) + 1.6))
    labels = list(runs)
    per_token = {}
    for i, name in enumerate(labels):
        times, tau = runs[name]
        left = 0.0
        for j, (part, ms) in enumerate(step_parts_ms(times).items()):
            ax.barh(i, ms, left=left, color=STYLE["colors"][j], label=part if i == 0 else None)
            left += ms
        per_token[name] = left / max(tau, 1e-9)
        ax.text(left, i, f"  τ {tau:.2f} → {per_token[name]:.0f} ms/token", va="center",
                fontsize=STYLE["tick_size"])
    ax.axvline(per_token[labels[0]], color="gray", ls="--", lw=1, label=f"{labels[0]}: ms per token")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.45 * max(sum(step_parts_ms(t).values()) for t, _ in runs.values()))
    _style(ax, "Where a decoding step's time goes (median per step)", "milliseconds per step", "method")
    _legend(ax, outside=True)
    return fig


def plot_tau_by_temperature(rows, ax=None):
    """τ against sampling temperature, one line per acceptance rule; `rows`: {mode, temperature, tau}."""
    fig, ax = _axes(ax)
    for j, mode in enumerate(_unique(r["mode"] for r in rows)):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["temperature"])
        ax.plot([r["temperature"] for r in rs], [r["tau"] for r in rs], marker="o",
                color=STYLE["colors"][j % len(STYLE["colors"])], label=mode)
    ax.axhline(1.0, color="gray", ls=":", lw=1, label="1 token per step (no guess accepted)")
    ax.set_ylim(0.9, max([2.0] + [r["tau"] * 1.1 for r in rows]))
    _style(ax, "Acceptance vs sampling temperature", "temperature", "τ (tokens per step)")
    _legend(ax, outside=True)
    return fig


def plot_learning_curve(rows):
    """Head accuracy vs training positions (log x): top-1 left, top-5 right; a colour per head, a line style
    per source (the plain Medusa heads solid, each other kind its own dash)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    heads, sources = _unique(r["head"] for r in rows), _unique(r.get("source", "") for r in rows)
    dashes = ["-", "--", ":", "-."]
    for ax, key in zip(axes, ("top1", "top5")):
        for head in heads:
            for i, source in enumerate(sources):
                rs = sorted((r for r in rows if (r["head"], r.get("source", "")) == (head, source) and key in r),
                            key=lambda r: r["positions"])
                if rs:
                    ax.plot([r["positions"] for r in rs], [r[key] for r in rs], marker="o", ms=4,
                            ls=dashes[i % len(dashes)], color=STYLE["colors"][(head - 1) % len(STYLE["colors"])])
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        _style(ax, f"{key.replace('top', 'top-')} accuracy vs training data", "training positions (log scale)",
               "accuracy")
    handles = [Line2D([], [], color=STYLE["colors"][(h - 1) % len(STYLE["colors"])], label=f"head {h}") for h in heads]
    handles += [Line2D([], [], color="gray", ls=dashes[i % len(dashes)], label=src or "heads")
                for i, src in enumerate(sources)]
    _legend(axes[1], outside=True, handles=handles)
    fig.tight_layout()
    return fig


def plot_loss_curves(history, ax=None):
    """Training loss per step: the total, and each head's loss if recorded."""
    fig, ax = _axes(ax)
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], lw=2, color="black", label="total")
    n_heads = max((len(h.get("head_losses") or []) for h in history), default=0)
    for k in range(n_heads):
        pts = [(h["step"], h["head_losses"][k]) for h in history if len(h.get("head_losses") or []) > k]
        ax.plot(*zip(*pts), lw=1, color=STYLE["colors"][k % len(STYLE["colors"])], label=f"head {k + 1}")
    _style(ax, "Training loss", "step", "loss")
    _legend(ax, outside=n_heads > 0)
    return fig


def save_fig(fig, path) -> Path:
    """Write `fig` to `path` (parents created) at STYLE's dpi; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=STYLE["dpi"], bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- widgets


def _png_output(fig, text: str = "") -> dict:
    """The figure as one Output-widget display item (PNG + plain text); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=STYLE["widget_dpi"], bbox_inches="tight")
    plt.close(fig)
    data = {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": text}
    return {"output_type": "display_data", "data": data, "metadata": {}}


class GenerationExplorer:
    """Step through a recorded `medusa_generate(..., record=True)` run with a slider.

    Each step shows the candidate tree labelled with its tokens (the accepted path in red), the
    tree attention mask, and a line with the tokens that step emitted. Display `.widget` (or the
    explorer itself) in a notebook; `show(step)` renders a step directly.
    """

    def __init__(self, out, tree: Tree, tokenizer=None):
        import ipywidgets as widgets

        if not out.candidates:
            raise ValueError("no recorded steps: generate with medusa_generate(..., record=True)")
        self.out, self.tree, self.tokenizer = out, tree, tokenizer
        self.slider = widgets.IntSlider(value=0, min=0, max=len(out.candidates) - 1, description="step",
                                        continuous_update=False)
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([self.slider, self.text, self.output])
        self.step = None
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.show(0)

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)]) if self.tokenizer is not None else str(int(token_id))

    def show(self, step: int) -> None:
        if step == self.step:
            return
        self.step = step
        self.slider.value = step  # a no-op when the slider called us
        tokens = [self.decode(t) for t in self.out.candidates[step].tolist()]
        path = self.out.accepted_nodes[step]
        emitted = [tokens[i] for i in path][: self.out.accept_lengths[step]]
        line = f"step {step + 1}/{len(self.out.candidates)}: accepted {len(emitted)} token(s): " + \
            " ".join(f"[{t}]" for t in emitted)
        fig, (a_tree, a_mask) = plt.subplots(1, 2, figsize=(11, max(3.5, 1.5 + 0.4 * len(self.tree.leaves()))),
                                             width_ratios=[1.4, 1])
        plot_tree(self.tree, tokens=tokens, accepted=path, ax=a_tree)
        plot_tree_mask(self.tree, labels=tokens, accepted=path, ax=a_mask)
        fig.tight_layout()
        self.text.value = html.escape(line)
        self.output.outputs = (_png_output(fig, line),)

    def _ipython_display_(self):  # ipywidgets 7 (Colab's) has no _repr_mimebundle_; display works in 7 and 8
        from IPython.display import display

        display(self.widget)


class TreeExplorer:
    """Grow `Tree.from_accuracies(acc, n)` with a node-count slider and an accuracy-scale slider.

    acc[k, i] is head k's cumulative top-(i+1) accuracy, as `evaluate.head_accuracy` measures it.
    The scale multiplies every accuracy (capped at 1), to see how better or worse heads change the
    best tree and its expected tokens per step.
    """

    def __init__(self, acc, n_nodes: int = 8, max_nodes: int = 64):
        import ipywidgets as widgets

        self.acc = np.asarray(acc, dtype=float)
        self.n_slider = widgets.IntSlider(value=n_nodes, min=1, max=max_nodes, description="nodes",
                                          continuous_update=False)
        self.scale_slider = widgets.FloatSlider(value=1.0, min=0.25, max=2.0, step=0.05, description="acc ×",
                                                continuous_update=False)
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.n_slider, self.scale_slider]), self.text, self.output])
        for s in (self.n_slider, self.scale_slider):
            s.observe(lambda _: self.show(), names="value")
        self.show()

    def scaled_acc(self) -> np.ndarray:
        return np.clip(self.acc * self.scale_slider.value, 0.0, 1.0)

    def show(self) -> None:
        acc = self.scaled_acc()
        self.tree = Tree.from_accuracies(acc, self.n_slider.value)
        self.tau = expected_accept_length(self.tree, acc)
        line = f"{self.tree.num_nodes} nodes, depth {self.tree.depth}: expected τ = {self.tau:.3f} tokens per step"
        fig = plot_tree(self.tree)
        self.text.value = html.escape(line)
        self.output.outputs = (_png_output(fig, line),)

    def _ipython_display_(self):  # ipywidgets 7 (Colab's) has no _repr_mimebundle_; display works in 7 and 8
        from IPython.display import display

        display(self.widget)


# ----------------------------------------------------------------------------- text


ACCEPT_COLORS = ("#f0f0f0", "#c6dbef", "#9ecae1", "#fdd49e", "#fc8d59")  # a step of 1, 2, 3, 4, 5+ tokens


def split_steps(new_tokens, accept_lengths) -> list[list[int]]:
    """The generated tokens cut into the decoding steps that emitted them: [[ids of step 1], ...]."""
    ids = [int(t) for t in new_tokens]
    if sum(accept_lengths) != len(ids):
        raise ValueError(f"accept_lengths add up to {sum(accept_lengths)}, but there are {len(ids)} tokens")
    bounds = np.cumsum([0, *accept_lengths])
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class AcceptanceView:
    """Generated text, each decoding step's tokens on one background whose colour says how many tokens the
    step emitted. Shows as HTML in a notebook; `str()` is the plain-text form, one [ ] per step."""

    def __init__(self, texts: list[str], lengths: list[int]):
        self.texts, self.lengths = texts, lengths

    def __str__(self) -> str:
        head = f"{sum(self.lengths)} tokens in {len(self.texts)} steps; one [ ] per step:\n"
        return head + "".join(f"[{t}]" for t in self.texts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(self.span(t, n) for t, n in zip(self.texts, self.lengths))
        style = "white-space: pre-wrap; font-family: monospace; line-height: 1.8"
        return self.legend() + f'<div style="{style}">{body}</div>'

    @staticmethod
    def span(text: str, n: int) -> str:
        color = ACCEPT_COLORS[min(n, len(ACCEPT_COLORS)) - 1]
        return (f'<span title="{n} token(s) in this step" style="background: {color}; '
                f'border-right: 1px solid #888">{html.escape(text)}</span>')

    def legend(self) -> str:
        top = len(ACCEPT_COLORS)
        keys = " ".join(self.span(f" {n}{'+' if n == top else ''} ", n) for n in range(1, top + 1))
        return f'<div style="font-family: monospace">tokens per step: {keys}</div>'


def show_acceptance(tokens_per_step, tokenizer=None) -> AcceptanceView:
    """The text a generation emitted, coloured by the step that emitted each token (see `AcceptanceView`).
    `tokens_per_step` is a list of token-id lists, as `split_steps` cuts a `GenerateOutput`'s tokens."""
    decode = tokenizer.decode if tokenizer is not None else (lambda ids: " ".join(map(str, ids)) + " ")
    return AcceptanceView([decode(ids) for ids in tokens_per_step], [len(ids) for ids in tokens_per_step])

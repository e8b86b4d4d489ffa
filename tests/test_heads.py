import json

import pytest
import torch

from medusa_lib.heads import HydraHeads, MedusaHeads, MedusaModel, ResBlock


def test_resblock_starts_as_identity():
    block = ResBlock(16)
    x = torch.randn(3, 16)
    assert torch.equal(block(x), x)


def test_heads_have_independent_weights():
    heads = MedusaHeads(16, 50, num_heads=3, num_layers=2, share_lm_head=False)
    ptrs = {p.data_ptr() for p in heads.parameters()}
    assert len(ptrs) == len(list(heads.parameters())) == 3 * 2 * 2 + 3


def test_fresh_head_reproduces_base_next_token(tiny):
    model, tok = tiny
    for share in (True, False):
        mm = MedusaModel.from_base(model, num_heads=2, share_lm_head=share)
        ids = tok("abc def", return_tensors="pt").input_ids
        with torch.no_grad():
            base, heads, _ = mm(ids)
        assert heads.shape == (2, *base.shape)
        assert torch.allclose(heads[0], base, atol=1e-5) and torch.allclose(heads[1], base, atol=1e-5)
        assert torch.equal(heads[1].argmax(-1), base.argmax(-1))


def test_shared_head_has_no_vocab_projection(embedded):
    model, _ = embedded
    shared = MedusaModel.from_base(model, 3, share_lm_head=True)
    own = MedusaModel.from_base(model, 3, share_lm_head=False)
    n_shared = sum(p.numel() for p in shared.heads.parameters())
    n_own = sum(p.numel() for p in own.heads.parameters())
    assert n_shared == 3 * (576 * 576 + 576)
    assert n_own == n_shared + 3 * 576 * 49152


def _perturb(mm, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in mm.heads.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    return mm


def test_save_load_roundtrip_identical_logits(tiny, tmp_path):
    model, tok = tiny
    mm = _perturb(MedusaModel.from_base(model, 3, num_layers=2, share_lm_head=False))
    mm.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "medusa_config.json").read_text())
    assert cfg == {"base_model_name_or_path": "tiny", "hidden_size": 64, "vocab_size": 100, "num_heads": 3,
                   "num_layers": 2, "share_lm_head": False, "kind": "medusa"}
    again = MedusaModel.from_pretrained(tmp_path, base=model)
    ids = tok("round trip", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(mm(ids)[1], again(ids)[1])
    assert not list(tmp_path.glob("*.tmp*"))


def test_mismatched_checkpoint_names_both_sides(tiny, embedded, tmp_path):
    MedusaModel.from_base(tiny[0], 2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="heads have hidden_size=64 but the base model has hidden_size=576"):
        MedusaModel.from_pretrained(tmp_path, base=embedded[0])


def test_missing_or_extra_keys_fail(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    MedusaModel.from_base(tiny[0], 2).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "heads.safetensors"))
    state.pop("blocks.1.0.linear.weight")
    save_file(state, str(tmp_path / "heads.safetensors"))
    with pytest.raises(KeyError, match="blocks.1.0.linear.weight"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])
    with pytest.raises(FileNotFoundError, match="medusa_config.json"):
        MedusaModel.from_pretrained(tmp_path / "nope", base=tiny[0])


def test_draft_vocab_topk_matches_full_when_it_covers_the_answer(tiny):
    model, tok = tiny
    mm = _perturb(MedusaModel.from_base(model, 2))
    h = torch.randn(1, 64)
    full = mm.head_topk(h, 3)
    mm.set_draft_vocab(torch.arange(100))
    assert torch.equal(mm.head_topk(h, 3), full)
    mm.set_draft_vocab(torch.tensor([5, 7, 9, 11]))
    assert set(mm.head_topk(h, 3).flatten().tolist()) <= {5, 7, 9, 11}
    with pytest.raises(ValueError, match="draft vocab"):
        mm.set_draft_vocab(torch.tensor([100]))


def _saved(tiny, tmp_path, draft=False):
    mm = MedusaModel.from_base(tiny[0], 3, share_lm_head=False)
    if draft:
        mm.set_draft_vocab(torch.arange(20))
    mm.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_weights_name_the_file_and_the_fix(tiny, tmp_path, damage):
    path = _saved(tiny, tmp_path) / "heads.safetensors"
    blob = path.read_bytes()
    path.write_bytes({"truncated": blob[: len(blob) // 2], "garbage": b"not a safetensors file", "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"heads\.safetensors is damaged \(.*\); "
                                         r"re-save the heads with MedusaModel\.save_pretrained"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"heads\.safetensors is missing \(the folder has a config"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])


@pytest.mark.parametrize("content", [b"junk junk", b"", None, "floats", "out-of-vocab"],
                         ids=["junk", "empty", "truncated", "floats", "out-of-vocab"])
def test_corrupted_draft_ids_name_the_file_and_the_fix(tiny, tmp_path, content):
    path = _saved(tiny, tmp_path, draft=True) / "draft_ids.pt"
    if content is None:
        path.write_bytes(path.read_bytes()[:50])  # truncated
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(torch.tensor([0.5, 1.5]) if content == "floats" else torch.tensor([3, 100]), path)
    with pytest.raises(ValueError, match=r"draft_ids\.pt (is damaged|must hold a 1-D tensor of token ids in \[0, 100\))"
                                         r".*delete draft_ids\.pt to draft from the full vocabulary"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])
    path.unlink()
    assert MedusaModel.from_pretrained(tmp_path, base=tiny[0]).draft_ids is None  # the suggested fix works


@pytest.mark.parametrize("edit,msg", [
    (lambda cfg: cfg.pop("num_layers"), r"medusa_config\.json is missing num_layers \(a Medusa heads config needs"),
    (lambda cfg: [cfg.pop(k) for k in ("num_heads", "share_lm_head")], r"is missing num_heads, share_lm_head"),
    (lambda cfg: cfg.update(num_layers="two"), r"config\.json: num_layers must be a whole number >= 1, got 'two'"),
    (lambda cfg: cfg.update(share_lm_head="no"), r"share_lm_head must be true or false, got 'no'"),
], ids=["no-num_layers", "two-missing", "num_layers-string", "share-string"])
def test_incomplete_config_names_the_missing_key(tiny, tmp_path, edit, msg):
    path = _saved(tiny, tmp_path) / "medusa_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=msg + r".*re-save the heads"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])


@pytest.mark.parametrize("text,msg", [
    ("{not json", "is not valid JSON"), ("", "is not valid JSON"), ("[1, 2]", "must hold a JSON object, got list"),
])
def test_config_that_is_not_json_names_the_file(tiny, tmp_path, text, msg):
    path = _saved(tiny, tmp_path) / "medusa_config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"medusa_config\.json " + msg):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])


def test_resave_without_draft_vocab_drops_the_old_one(tiny, tmp_path):
    mm = MedusaModel.from_base(tiny[0], 2)
    mm.set_draft_vocab(torch.arange(10))
    mm.save_pretrained(tmp_path)
    mm.set_draft_vocab(None)
    mm.save_pretrained(tmp_path)
    assert MedusaModel.from_pretrained(tmp_path, base=tiny[0]).draft_ids is None
    mode = (tmp_path / "heads.safetensors").stat().st_mode & 0o777
    assert mode & 0o044, f"saved files follow the umask (readable by others), got {oct(mode)}"


# ----------------------------------------------------------------------------- Hydra heads


@pytest.mark.parametrize("share", [True, False])
def test_fresh_hydra_head_equals_fresh_medusa_head(tiny, share):
    model, tok = tiny
    hydra = MedusaModel.from_base(model, 3, num_layers=2, share_lm_head=share, kind="hydra")
    medusa = MedusaModel.from_base(model, 3, num_layers=2, share_lm_head=share)
    ids = tok("abc def ghi", return_tensors="pt").input_ids
    with torch.no_grad():
        # [K, B, T, V], teacher-forced; equal up to float rounding (Hydra's wider input takes another GEMM)
        assert torch.allclose(hydra(ids)[1], medusa(ids)[1], atol=1e-5)
        h, prev = torch.randn(4, 64), torch.randint(0, 100, (4, 3))
        for k in range(3):  # whatever the draft tokens, a fresh head reads only h
            assert torch.equal(hydra.hydra_topk(h, k, prev[:, : k + 1], 5), medusa.head_topk(h, 5)[k])


def test_hydra_heads_read_the_draft_tokens(tiny):
    model, _ = tiny
    mm = _perturb(MedusaModel.from_base(model, 3, kind="hydra"))
    assert isinstance(mm.heads, HydraHeads) and mm.kind == "hydra"
    assert [tuple(p.weight.shape) for p in mm.heads.inputs] == [(64, 128), (64, 192), (64, 256)]  # (k+2)H -> H
    h = torch.randn(1, 64).expand(2, -1)
    with torch.no_grad():
        z = mm.hydra_state(h, 2, torch.tensor([[5, 6, 7], [5, 6, 8]]))  # same h, last draft token differs
    assert not torch.allclose(z[0], z[1])
    assert not mm.embed(torch.tensor([5, 6])).requires_grad  # the base model's table, frozen: no gradient
    with pytest.raises(ValueError, match="Hydra heads read their tree path's tokens too: use topk_along"):
        mm.head_topk(h, 3)
    nxt = mm.embed(torch.tensor([[5, 6, 7], [5, 6, 8]]))  # [2, 3, H]: every head's path, as training feeds it
    assert torch.equal(mm.heads.hidden(h, nxt)[2], z)  # the base class's contract holds, given the paths
    with pytest.raises(ValueError, match="Hydra head 1 reads h and the embeddings of the 2 tokens before it"):
        mm.heads.block(h, 1, mm.embed(torch.tensor([[5], [6]])))
    with pytest.raises(ValueError, match=r"kind must be one of \('medusa', 'hydra'\), got 'eagle'"):
        MedusaModel.from_base(model, 3, kind="eagle")


def test_half_precision_save_loads_back_into_fp32_weights(tiny, tmp_path):
    model, _ = tiny
    mm = _perturb(MedusaModel.from_base(model, 2, kind="hydra"))
    mm.save_pretrained(tmp_path / "fp32")
    mm.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    size = {d: (tmp_path / d / "heads.safetensors").stat().st_size for d in ("fp16", "fp32")}
    assert size["fp16"] < 0.6 * size["fp32"]
    again = MedusaModel.from_pretrained(tmp_path / "fp16", base=model)
    for (name, p), q in zip(mm.heads.named_parameters(), again.heads.parameters()):
        assert q.dtype == torch.float32, name  # fp32 master weights, whatever the file holds
        assert torch.equal(q, p.detach().half().float()), name


def test_hydra_save_load_roundtrip_keeps_kind(tiny, tmp_path):
    model, tok = tiny
    mm = _perturb(MedusaModel.from_base(model, 3, num_layers=2, share_lm_head=False, kind="hydra"))
    mm.set_draft_vocab(torch.arange(0, 100, 2))
    mm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "medusa_config.json").read_text())["kind"] == "hydra"
    assert "# Hydra heads for tiny" in (tmp_path / "README.md").read_text()
    again = MedusaModel.from_pretrained(tmp_path, base=model)
    assert again.kind == "hydra" and torch.equal(again.draft_ids, mm.draft_ids)
    ids = tok("round trip", return_tensors="pt").input_ids
    h, prev = torch.randn(3, 64), torch.randint(0, 100, (3, 2))
    with torch.no_grad():
        assert torch.equal(mm(ids)[1], again(ids)[1])
        assert torch.equal(mm.hydra_topk(h, 1, prev, 4), again.hydra_topk(h, 1, prev, 4))


def test_old_config_without_kind_loads_as_medusa(tiny, tmp_path):
    path = _saved(tiny, tmp_path) / "medusa_config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("kind")
    path.write_text(json.dumps(cfg))
    assert MedusaModel.from_pretrained(tmp_path, base=tiny[0]).kind == "medusa"
    path.write_text(json.dumps({**cfg, "kind": "eagle"}))
    with pytest.raises(ValueError, match=r"medusa_config\.json: kind must be one of .*got 'eagle'.*re-save"):
        MedusaModel.from_pretrained(tmp_path, base=tiny[0])


def test_shipped_heads_of_both_kinds_load_on_the_embedded_model(embedded):
    """Both shipped sets load onto the embedded model, each as its own kind, trained on the same positions."""
    import json

    from medusa_lib.heads import SHIPPED_HEADS, SHIPPED_HYDRA_HEADS

    model, _ = embedded
    kinds = {MedusaModel.from_pretrained(d, base=model).kind for d in (SHIPPED_HEADS, SHIPPED_HYDRA_HEADS)}
    assert kinds == {"medusa", "hydra"}
    records = [json.loads((d / "training_record.json").read_text()) for d in (SHIPPED_HEADS, SHIPPED_HYDRA_HEADS)]
    assert records[0]["positions"] == records[1]["positions"]


def test_bank_accuracy_runs_the_heads_once_per_chunk(tiny):
    """Every head's top-k from one head_topk call, not one call (of all K heads) per head."""
    from medusa_lib.positions import PositionBank, bank_accuracy, check_rows

    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": torch.randint(4, 100, (4,), generator=g).tolist(),
             "response_ids": torch.randint(4, 100, (12,), generator=g).tolist()} for _ in range(3)]
    mm = MedusaModel.from_base(tiny[0], 3, share_lm_head=False)
    for p in mm.heads.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    bank = PositionBank(mm, check_rows(rows, 64), 3)
    calls, real = [], mm.head_topk
    mm.head_topk = lambda h, topk: calls.append(1) or real(h, topk)
    acc = bank_accuracy(mm, bank, topk=5)
    assert len(calls) == 1 and acc.shape == (3, 5)
    for k in range(3):  # the same numbers as each head scored on its own rows
        target, mask = bank.target(torch.arange(len(bank)), k)
        top = real(bank.h[mask], 5)[k]  # [n, 5]
        want = (top == target[mask][:, None]).float().cumsum(-1).clamp(max=1).mean(0)
        assert torch.allclose(acc[k], want)

import json

import pytest
import torch
from safetensors.torch import load_file

from medusa_lib.cli import export as main
from medusa_lib.heads import MedusaModel, model_card
from medusa_lib.interop import export_heads, load_foreign_heads, load_heads

H, V, K, L = 64, 100, 3, 2  # tiny: hidden 64, vocab 100; 3 heads of 2 ResBlocks


def _perturbed(model, share, seed=0):
    mm = MedusaModel.from_base(model, K, num_layers=L, share_lm_head=share)
    g = torch.Generator().manual_seed(seed)
    for p in mm.heads.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    return mm


def _head_logits(mm, tok):
    ids = tok("export round trip", return_tensors="pt").input_ids
    with torch.no_grad():
        return mm(ids)[1]  # [K, B, T, V]


def _vllm_shapes():
    shapes = {}
    for h in range(K):
        for layer in range(L):
            shapes[f"blocks.{h}.layers.{layer}.weight"] = (H, H)
            shapes[f"blocks.{h}.layers.{layer}.bias"] = (H,)
        shapes[f"lm_heads.{h}.weight"] = (V, H)
    return shapes


def _medusa_shapes():
    shapes = {}
    for h in range(K):
        for layer in range(L):
            shapes[f"{h}.{layer}.linear.weight"] = (H, H)
            shapes[f"{h}.{layer}.linear.bias"] = (H,)
        shapes[f"{h}.{L}.weight"] = (V, H)
    return shapes


@pytest.mark.parametrize("share", [True, False])
def test_vllm_export_layout_and_roundtrip(tiny, tmp_path, share):
    model, tok = tiny
    mm = _perturbed(model, share)
    out = export_heads(mm, tmp_path, format="vllm")
    state = load_file(str(out / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in state.items()} == _vllm_shapes()
    if share:  # one copy of the base lm_head per head
        for h in range(K):
            assert torch.equal(state[f"lm_heads.{h}.weight"], model.lm_head.weight)
    cfg = json.loads((out / "config.json").read_text())
    want = {"model_type": "medusa", "architectures": ["MedusaModel"], "hidden_size": H, "vocab_size": V,
            "num_heads": K, "num_hidden_layers": L, "medusa_fc_bias": True, "truncated_vocab_size": V,
            "base_model_name_or_path": "tiny"}
    if share:
        want["original_lm_head"] = True
    assert cfg == want
    again = load_heads(out, model)
    assert (again.heads.num_heads, again.heads.num_layers) == (cfg["num_heads"], cfg["num_hidden_layers"])
    assert again.heads.hidden_size == cfg["hidden_size"] and again.heads.vocab_size == cfg["vocab_size"]
    assert torch.equal(_head_logits(mm, tok), _head_logits(again, tok))
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("share", [True, False])
def test_medusa_export_layout_and_roundtrip(tiny, tmp_path, share):
    model, tok = tiny
    mm = _perturbed(model, share)
    out = export_heads(mm, tmp_path, format="medusa")
    state = torch.load(out / "medusa_lm_head.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == _medusa_shapes()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg == {"medusa_num_heads": K, "medusa_num_layers": L, "base_model_name_or_path": "tiny"}
    for again in (load_foreign_heads(out, model), load_heads(out, model)):
        assert torch.equal(_head_logits(mm, tok), _head_logits(again, tok))
    assert not list(tmp_path.glob("*.tmp*"))


def test_faster_decoding_safetensors_loads(tiny, tmp_path):
    from safetensors.torch import save_file

    model, tok = tiny
    mm = _perturbed(model, False)
    out = export_heads(mm, tmp_path, format="medusa")
    state = torch.load(out / "medusa_lm_head.pt", weights_only=True)
    save_file(state, str(out / "medusa_lm_head.safetensors"))
    (out / "medusa_lm_head.pt").unlink()
    assert torch.equal(_head_logits(mm, tok), _head_logits(load_heads(out, model), tok))


def test_wrong_hidden_size_names_key_and_shapes(tiny, tmp_path):
    state = {}
    for h in range(2):
        state[f"{h}.0.linear.weight"] = torch.zeros(32, 32)
        state[f"{h}.0.linear.bias"] = torch.zeros(32)
        state[f"{h}.1.weight"] = torch.zeros(V, 32)
    torch.save(state, tmp_path / "medusa_lm_head.pt")
    (tmp_path / "config.json").write_text(json.dumps({"medusa_num_heads": 2, "medusa_num_layers": 1}))
    msg = r"medusa_lm_head.pt: key '0.0.linear.weight' has shape \[32, 32\] but the base model needs \[64, 64\]"
    with pytest.raises(ValueError, match=msg):
        load_foreign_heads(tmp_path, tiny[0])


def test_missing_key_is_named(tiny, tmp_path):
    out = export_heads(_perturbed(tiny[0], True), tmp_path, format="medusa")
    state = torch.load(out / "medusa_lm_head.pt", weights_only=True)
    state.pop("1.1.linear.bias")
    torch.save(state, out / "medusa_lm_head.pt")
    with pytest.raises(KeyError, match=r"key '1.1.linear.bias' is missing \(the base model needs shape \[64\]\)"):
        load_heads(out, tiny[0])


@pytest.mark.parametrize("format, weights", [("medusa", "medusa_lm_head.pt"), ("vllm", "model.safetensors")])
def test_a_truncated_export_names_the_damaged_file(tiny, tmp_path, format, weights):
    out = export_heads(_perturbed(tiny[0], True), tmp_path, format=format)
    blob = (out / weights).read_bytes()
    (out / weights).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=rf"{weights} is damaged \(.*\); export the heads again"):
        load_heads(out, tiny[0])


def test_wrong_vocab_in_vllm_export_names_key(tiny, tmp_path):
    from safetensors.torch import save_file

    out = export_heads(_perturbed(tiny[0], False), tmp_path, format="vllm")
    state = load_file(str(out / "model.safetensors"))
    state["lm_heads.2.weight"] = torch.zeros(V + 1, H)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"key 'lm_heads.2.weight' has shape \[101, 64\] .* needs \[100, 64\]"):
        load_foreign_heads(out, tiny[0])


def test_model_card(tiny, tmp_path):
    mm = MedusaModel.from_base(tiny[0], K)
    card = model_card(mm, {})
    assert "tiny" in card and "not measured" in card and "τ" in card
    card = model_card(mm, {"tau": 2.345, "head_accuracy": [0.61, 0.4, 0.25], "data": "self-distilled chats",
                           "format": "vllm"})
    assert "2.35" in card and "head 1: 61.0%" in card and "self-distilled chats" in card
    assert '"method": "medusa"' in card
    mm.save_pretrained(tmp_path, extra={"tau": 1.9})
    assert "1.90" in (tmp_path / "README.md").read_text()


def test_cli_end_to_end(tiny, tmp_path, capsys):
    model, tok = tiny
    mm = _perturbed(model, True)
    mm.save_pretrained(tmp_path / "heads")
    for format, weights in (("vllm", "model.safetensors"), ("medusa", "medusa_lm_head.pt")):
        out = tmp_path / format
        main(["--heads", str(tmp_path / "heads"), "--format", format, "--out", str(out), "--model", "tiny"])
        assert (out / weights).exists() and (out / "README.md").exists()
        assert weights in capsys.readouterr().out
        assert torch.equal(_head_logits(mm, tok), _head_logits(load_heads(out, model), tok))
    main(["--heads", str(tmp_path / "heads"), "--out", str(tmp_path / "auto")])  # base from medusa_config.json
    assert (tmp_path / "auto" / "model.safetensors").exists()


def test_export_round_trip_keeps_the_draft_vocab_and_sharing(tiny, tmp_path):
    model, tok = tiny
    mm = _perturbed(model, True)
    mm.set_draft_vocab(torch.arange(0, V, 3))
    for format in ("vllm", "medusa"):
        again = load_heads(export_heads(mm, tmp_path / format, format=format), model)
        assert torch.equal(again.draft_ids, mm.draft_ids) and again.heads.share_lm_head
        h = torch.randn(5, H)
        assert torch.equal(again.head_topk(h, 3), mm.head_topk(h, 3))


def test_export_refuses_a_non_empty_folder_and_replaces_it_whole(tiny, tmp_path):
    mm = _perturbed(tiny[0], False)
    export_heads(mm, tmp_path / "out", format="medusa")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_heads(mm, tmp_path / "out", format="vllm")
    export_heads(mm, tmp_path / "out", format="vllm", overwrite=True)  # no stale medusa_lm_head.pt left behind
    assert not (tmp_path / "out" / "medusa_lm_head.pt").exists()
    assert load_heads(tmp_path / "out", tiny[0]).heads.num_heads == K
    mm.save_pretrained(tmp_path / "heads")
    with pytest.raises(ValueError, match="is the heads folder or holds it"):
        main(["--heads", str(tmp_path / "heads"), "--out", str(tmp_path / "heads"), "--overwrite"])


def test_export_refuses_hydra_heads(tiny, tmp_path):
    mm = MedusaModel.from_base(tiny[0], K, kind="hydra")
    for format in ("vllm", "medusa"):
        with pytest.raises(ValueError, match=r"vLLM and FasterDecoding load Medusa heads only; these are Hydra heads"):
            export_heads(mm, tmp_path / format, format=format)
        assert not (tmp_path / format).exists()
    mm.save_pretrained(tmp_path / "heads")
    with pytest.raises(ValueError, match="load Medusa heads only.*MedusaModel.save_pretrained"):
        main(["--heads", str(tmp_path / "heads"), "--out", str(tmp_path / "out")])

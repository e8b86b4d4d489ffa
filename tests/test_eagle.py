"""The EAGLE drafter: lossless on any dynamic tree, its cache after a step equals a fresh pass over the accepted
context, save/load keeps the weights exactly, and training lowers the loss and raises held-out top-1."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from medusa_lib.backbone import Backbone
from medusa_lib.config import SMOKE
from medusa_lib.decoding import greedy_generate, medusa_generate, prefill
from medusa_lib.eagle import EagleDrafter, EagleNet, EagleTree, best_paths, causal_mask, load_eagle, save_eagle
from medusa_lib.eagle_train import (
    EagleTrainConfig,
    collate,
    eagle_accuracy,
    eagle_features,
    eagle_loss,
    sequences,
    train_eagle,
    unrolled,
)


def _net(model, seed: int = 0, scale: float = 0.0, draft=None) -> EagleNet:
    """A fresh net; `scale` > 0 perturbs every weight (fresh nets are already random, this makes them wilder)."""
    torch.manual_seed(seed)
    V = model.config.vocab_size
    net = EagleNet.for_backbone(model, torch.arange(V) if draft is None else draft)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * scale)
    return net.eval()


@settings(max_examples=6 if SMOKE else 20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 5), topk=st.integers(1, 6), nodes=st.integers(1, 30),
       scale=st.sampled_from([0.0, 0.05, 0.5]), prompt_len=st.integers(1, 12))
def test_eagle_greedy_is_lossless_on_random_dynamic_trees(tiny, seed, depth, topk, nodes, scale, prompt_len):
    model, _ = tiny
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=g)
    drafter = EagleDrafter(_net(model, seed, scale), model, EagleTree(depth, topk, nodes))
    out = medusa_generate(drafter, ids, max_new_tokens=24)
    assert out.new_tokens.tolist() == greedy_generate(model, ids, 24).new_tokens.tolist()
    assert max(out.accept_lengths) <= depth + 1


def test_eagle_greedy_is_lossless_on_the_embedded_model(embedded):
    model, tok = embedded
    ids = tok("Name three primary colours.", return_tensors="pt").input_ids
    drafter = EagleDrafter(_net(model, 1, draft=torch.arange(0, model.config.vocab_size, 7)), model,
                           EagleTree(4, 4, 12))
    out = medusa_generate(drafter, ids, max_new_tokens=16)
    assert out.new_tokens.tolist() == greedy_generate(model, ids, 16).new_tokens.tolist()


def _cache(drafter) -> list[torch.Tensor]:
    return [t for layer in drafter.cache.layers for t in (layer.keys, layer.values)]


def test_the_drafter_cache_after_a_step_equals_a_fresh_pass_over_the_accepted_context(tiny):
    """Step by step (prompt, then two accepted paths of different lengths) against one pass over it all."""
    model, _ = tiny
    net = _net(model, 3, 0.1)
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3))
    full = greedy_generate(model, ids, 8).sequences  # [1, 17]: prompt and 8 greedy tokens
    _, h = prefill(Backbone(model), full)  # [17, H] the true features of every position
    ctx = full[0].tolist()
    stepped = EagleDrafter(net, model)
    stepped.start(ctx[:9])
    stepped.propose(h[:9], ctx[9], ctx[:9])  # the prompt
    stepped.propose(h[9:12], ctx[12], ctx[:12])  # 3 accepted (root + 2 drafts)
    stepped.propose(h[12:13], ctx[13], ctx[:13])  # only the root
    fresh = EagleDrafter(net, model)
    fresh.start(ctx[:13])
    fresh.propose(h[:13], ctx[13], ctx[:13])
    assert stepped.fed == fresh.fed == 13
    for a, b in zip(_cache(stepped), _cache(fresh)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_propose_refuses_a_context_it_has_not_read(tiny):
    model, _ = tiny
    drafter = EagleDrafter(_net(model), model)
    drafter.start([1, 2, 3])
    with pytest.raises(RuntimeError, match="call start"):
        drafter.propose(torch.zeros(1, model.config.hidden_size), 4, [1, 2, 3])


def test_best_paths_keep_the_top_nodes_as_a_tree():
    # nodes: 0, 1 at depth 1 (parents -1); 2, 3 children of 0; 4 child of 2
    toks = torch.tensor([10, 11, 12, 13, 14])
    scores = torch.tensor([-0.1, -2.0, -0.3, -3.0, -0.5])
    parents = torch.tensor([-1, -1, 0, 0, 2])
    assert best_paths(toks, scores, parents, 3) == [[10, 12, 14]]  # a chain: its best 3 nodes
    assert best_paths(toks, scores, parents, 4) == [[10, 12, 14], [11]]
    assert best_paths(toks, scores, parents, 5) == [[10, 12, 14], [11], [10, 13]]


def test_save_and_load_keep_the_weights_exactly(tiny, tmp_path):
    model, _ = tiny
    net = _net(model, 5, 0.1, draft=torch.arange(0, model.config.vocab_size, 3))
    save_eagle(net, tmp_path / "fp32", "tiny", EagleTree(3, 2, 5))
    back = load_eagle(tmp_path / "fp32", model)
    assert back.tree == EagleTree(3, 2, 5)
    for (k, a), (_, b) in zip(net.state_dict().items(), back.net.state_dict().items()):
        assert torch.equal(a, b), k
    save_eagle(net, tmp_path / "fp16", "tiny", dtype=torch.float16)
    half = load_eagle(tmp_path / "fp16", model).net
    assert half.fc.weight.dtype == torch.float32  # fp16 on disk, fp32 in memory
    assert torch.equal(half.fc.weight, net.fc.weight.half().float())
    (tmp_path / "fp32" / "eagle.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match="eagle.safetensors cannot be read"):
        load_eagle(tmp_path / "fp32", model)


@pytest.mark.parametrize("t", [0, 4, 9])
def test_unrolled_training_steps_compute_what_drafting_along_the_true_tokens_computes(tiny, t):
    """EAGLE-3's training-time test, checked against the drafter's own cache and masks: step j at t must be
    depth j + 1 of a chain drafted from root x_{t+1} whose drafted tokens are the true ones."""
    model, _ = tiny
    net = _net(model, 5, 0.1)
    ids = torch.randint(0, model.config.vocab_size, (1, 14), generator=torch.Generator().manual_seed(5))
    _, h = prefill(Backbone(model), ids)  # [14, H]
    emb = Backbone(model).embed(ids)  # [1, 14, H]
    outs = unrolled(net, emb, h[None, :-1], 3)  # 3 x [1, 13, H]
    cache = DynamicCache(config=net.cfg)
    with torch.no_grad():  # the drafter's way: read positions 0 .. t, then draft one node per depth
        o = net(emb[:, 1:t + 2], h[None, :t + 1], causal_mask(t + 1, torch.float32, "cpu"),
                torch.arange(t + 1)[None], cache)[:, -1:]
        for j in range(3):
            if j:
                o = net(emb[:, t + j + 1:t + j + 2], o, torch.zeros(1, 1, 1, t + 1 + j), torch.tensor([[t + j]]), cache)
            assert torch.allclose(outs[j][:, t], o[:, 0], atol=1e-5), j


def test_unrolled_loss_stays_finite_when_answers_are_shorter_than_the_unroll(tiny):
    model, _ = tiny
    net = _net(model)
    rows = [{"prompt_ids": [5, 6, 7], "response_ids": [8, 9]}]  # 2 answer positions: steps 0 and 1 only
    seqs = sequences(rows, 64)
    feats = [prefill(Backbone(model), s[None])[1].half() for s, _ in seqs]
    ids, f, mask = collate(seqs, feats, [0], "cpu")
    W = Backbone(model).lm_head.weight.detach()
    for unroll in (1, 2, 3, 5):
        feature, token, top1 = eagle_loss(net, Backbone(model), W, ids, f, mask, unroll=unroll)
        assert torch.isfinite(feature) and torch.isfinite(token), unroll


def test_training_lowers_the_loss_and_raises_heldout_top1(tiny, tmp_path):
    model, _ = tiny
    V, g = model.config.vocab_size, torch.Generator().manual_seed(0)
    rows = []
    for _ in range(24):  # the tiny model's own greedy answers: what the drafter should predict
        ids = torch.randint(0, V, (1, 6), generator=g)
        answer = greedy_generate(model, ids, 24).new_tokens.tolist()
        rows.append({"prompt_ids": ids[0].tolist(), "response_ids": answer})
    seqs = sequences(rows, 64)
    feats = eagle_features(model, seqs, root=tmp_path / "features", progress=False)
    train, held = (seqs[:20], feats[:20]), (seqs[20:], feats[20:])
    net = _net(model)
    before = eagle_accuracy(net, model, *held)["top1"]
    cfg = EagleTrainConfig(epochs=8, lr=3e-3, batch_tokens=96, warmup=5)
    state = train_eagle(net, model, *train, cfg, eval_data=held, save_dir=tmp_path / "run", base_name="tiny",
                        progress=False)
    hist = state["history"]
    assert hist[-1]["feature"] < hist[0]["feature"] and hist[-1]["token"] < hist[0]["token"]
    assert hist[-1]["heldout_top1"] > before + 0.1, (before, [h["heldout_top1"] for h in hist])
    assert load_eagle(tmp_path / "run", model).net.fc.weight.shape == net.fc.weight.shape  # the best epoch, saved


def test_export_to_eagles_layout_round_trips_exactly(tiny, tmp_path):
    from medusa_lib.eagle import export_eagle, import_eagle

    model, _ = tiny
    net = _net(model, 7, 0.1, draft=torch.arange(0, model.config.vocab_size, 2))
    export_eagle(net, tmp_path / "ea", "tiny")
    saved = torch.load(tmp_path / "ea" / "pytorch_model.bin", weights_only=True)
    assert {"fc.weight", "fc.bias", "layers.0.self_attn.q_proj.weight", "layers.0.mlp.down_proj.weight",
            "layers.0.post_attention_layernorm.weight"} <= set(saved)
    assert not any("input_layernorm" in k for k in saved)  # EAGLE's layer 0 has none
    import json

    cfg = json.loads((tmp_path / "ea" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["bias"] is True
    back = import_eagle(tmp_path / "ea", model).net
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_bad_tree_settings_fail_clearly(tiny):
    model, _ = tiny
    net = _net(model, draft=torch.arange(3))
    for tree, msg in [(EagleTree(0, 2, 4), "depth must be a whole number >= 1"),
                      (EagleTree(2, 4, 4), "topk=4 is more than the 3 tokens"), (EagleTree(2, 2, 1.5), "nodes")]:
        with pytest.raises(ValueError, match=msg):
            EagleDrafter(net, model, tree)


def test_exact_sampling_stays_exact_with_the_dynamic_tree(tiny):
    """chi^2 on the first token and on the second given the most common first: the dynamic tree changes what is
    drafted, never what is emitted (multi-draft rejection sampling over each node's children)."""
    from test_decoding import check_sampling_is_exact

    model, _ = tiny
    drafter = EagleDrafter(_net(model, 11), model, EagleTree(depth=2, topk=50, nodes=60))  # half the vocabulary
    ids = torch.tensor([[10, 20, 30]])
    check_sampling_is_exact(model, lambda s: medusa_generate(drafter, ids, max_new_tokens=2, mode="sample",
                                                             temperature=1.0, seed=s, eos_token_id=[]),
                            ids, 800 if SMOKE else 3000)


def test_a_drafting_step_reads_the_device_once(tiny, monkeypatch):
    """Every depth is batched on the device; only the kept tree comes back to the host, in one transfer."""
    from test_decoding import count_host_reads

    model, _ = tiny
    drafter = EagleDrafter(_net(model, 2), model, EagleTree(4, 4, 12))
    ids = list(range(5, 14))
    _, h = prefill(Backbone(model), torch.tensor([ids]))
    drafter.start(ids)
    reads = count_host_reads(monkeypatch)
    drafter.propose(h, 20, ids)
    assert len(reads) == 1, reads

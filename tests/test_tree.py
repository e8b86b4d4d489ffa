import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_lib.tree import (
    MC_SIM_7B_63,
    Tree,
    expected_accept_length,
    fastest_tree,
    rank_probs,
    standard_accuracies,
)


def test_from_choices_buffers_small_tree():
    tree = Tree.from_choices([[0], [0, 0], [1]])
    assert tree.paths == [(0,), (1,), (0, 0)]  # sorted by depth, then rank
    assert tree.num_nodes == 4 and tree.depth == 2 and tree.max_rank == 2
    assert tree.node_depths().tolist() == [0, 1, 1, 2]
    assert tree.parents() == [-1, 0, 0, 1]
    assert tree.children() == [[1, 2], [3], [], []]
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(tree.ancestor_mask(), expected)
    assert tree.retrieve_indices().tolist() == [[0, 2, -1], [0, 1, 3]]
    assert tree.position_ids(5).tolist() == [[5, 6, 6, 7]]
    heads, ranks = tree.tree_indices()
    assert heads.tolist() == [0, 0, 1] and ranks.tolist() == [0, 1, 0]


def test_levels_give_each_depth_parents_paths_and_ranks():
    tree = Tree.from_choices([[0], [1], [0, 0], [0, 2], [1, 1], [0, 2, 0]])
    assert tree.ranks() == [-1, 0, 1, 0, 2, 1, 0]
    (n1, p1, r1, k1), (n2, p2, r2, k2), (n3, p3, r3, k3) = tree.levels()
    assert n1.tolist() == [1, 2] and p1.tolist() == [[0]] and r1.tolist() == [0, 0] and k1.tolist() == [0, 1]
    assert n2.tolist() == [3, 4, 5] and p2.tolist() == [[0, 1], [0, 2]]  # parents: nodes 1 and 2, root first
    assert r2.tolist() == [0, 0, 1] and k2.tolist() == [0, 2, 1]
    assert n3.tolist() == [6] and p3.tolist() == [[0, 1, 4]] and r3.tolist() == [0] and k3.tolist() == [0]
    assert Tree([]).levels() == []


def test_attention_mask_is_float_with_prefix_visible():
    tree = Tree.from_choices([[0], [1], [0, 0]])
    mask = tree.attention_mask(past_len=3)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 4, 7)
    assert (mask[0, 0, :, :3] == 0).all()
    assert mask[0, 0, 1, 3 + 2] == torch.finfo(torch.float32).min  # sibling hidden
    assert mask[0, 0, 3, 3 + 1] == 0  # parent visible


def test_candidates_pick_head_ranks():
    tree = Tree.from_choices([[0], [1], [0, 2]])
    topk = torch.tensor([[10, 11, 12], [20, 21, 22]])
    assert tree.candidates(7, topk).tolist() == [7, 10, 11, 22]


@pytest.mark.parametrize("paths,msg", [
    ([[0, 1]], r"needs its prefix \[0\]"),
    ([[0], [0]], "duplicate path"),
    ([[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]], "depth 4 but there are only 3 heads"),
    ([[10]], "rank outside top-10"),
    ([[]], "empty path"),
    ([[-1]], "rank outside top-10"),
])
def test_invalid_trees_fail_clearly(paths, msg):
    with pytest.raises(ValueError, match=msg):
        Tree.from_choices(paths, num_heads=3)


@pytest.mark.parametrize("choices,msg", [
    ([[0.5]], r"path \[0\.5\] has rank 0\.5 \(float\); ranks are whole numbers"),
    ([[0], [1.0]], r"has rank 1\.0 \(float\)"),
    ([[0], [0, True]], r"has rank True \(bool\)"),
    (-3, r"choices must be a list of lists of ranks, e.g. \[\[0\], \[0, 0\], \[1\]\]; got -3"),
    ("garbage", r"choices must be a list of lists of ranks.*got 'garbage'"),
    ([0, 1], r"choices must be a list of lists of ranks.*got the path 0"),
    ([[0], "01"], r"choices must be a list of lists of ranks.*got the path '01'"),
], ids=["half-rank", "float-rank", "bool-rank", "number", "string", "flat-list", "string-path"])
def test_non_integer_ranks_and_non_list_choices_fail_clearly(choices, msg):
    with pytest.raises(TypeError, match=msg):
        Tree.from_choices(choices)


def test_integer_like_ranks_are_kept():
    import numpy as np

    tree = Tree.from_choices([[np.int64(0)], (torch.tensor(1),), [0, 0]])
    assert tree.paths == [(0,), (1,), (0, 0)] and all(type(r) is int for p in tree.paths for r in p)


def test_standard_trees_and_mc_sim():
    for k in range(1, 6):
        for n in (4, 8, 16, 32, 64):
            tree = Tree.standard(k, n)
            assert tree.num_nodes == min(n, 1 + 10 * (k == 1) + 10**6 * (k > 1)) and tree.depth <= k
    assert Tree.chain(3).paths == [(0,), (0, 0), (0, 0, 0)]
    mc = Tree.mc_sim_7b_63()
    assert mc.num_nodes == 64 and mc.depth == 4 and len(MC_SIM_7B_63) == 63
    assert Tree.default(3).num_nodes == 8
    assert Tree.standard(12, 64).depth <= 12 and Tree.default(12).num_nodes == 8  # any head count (train_kd's 12)
    with pytest.raises(ValueError, match="at least 1 head"):
        Tree.standard(0, 8)


def test_standard_accuracies_are_a_probability_table():
    for k in (1, 3, 5, 12):
        acc = standard_accuracies(k)
        assert acc.shape == (k, 10) and (acc > 0).all() and (acc < 1).all()
        assert (acc.diff(dim=1) > 0).all()  # cumulative over ranks: every rank adds a little
        assert (acc.diff(dim=0) <= 0).all()  # a later head is never more likely right
    assert standard_accuracies(3)[:, 0].tolist() == pytest.approx([0.6, 0.4, 0.3])
    assert standard_accuracies(3)[0, 4] == pytest.approx(0.818, abs=1e-3)


def test_from_accuracies_maximises_expected_length():
    acc = torch.tensor([[0.6, 0.8, 0.9], [0.5, 0.7, 0.8]])  # cumulative: rank probs .6 .2 .1 / .5 .2 .1
    tree = Tree.from_accuracies(acc, 4)
    # values: (0)=.6, (0,0)=.3, (1)=.2, (0,1)=.12 ... -> best three
    assert tree.paths == [(0,), (1,), (0, 0)]
    assert expected_accept_length(tree, acc) == pytest.approx(1 + 0.6 + 0.2 + 0.3)
    assert rank_probs(acc)[1].tolist() == pytest.approx([0.5, 0.2, 0.1])
    # no other 3-path tree of valid prefixes beats it
    for other in ([[0], [1], [2]], [[0], [0, 0], [0, 1]], [[0], [0, 0], [1]]):
        assert expected_accept_length(Tree.from_choices(other), acc) <= expected_accept_length(tree, acc) + 1e-12


def test_fastest_tree_follows_the_hardware_cost():
    acc = standard_accuracies(3)
    flat = {n: 1.0 for n in (2, 4, 8, 16, 32)}  # a GPU-like cost: extra nodes are free
    steep = {n: 1.0 + 0.25 * n for n in (2, 4, 8, 16, 32)}  # a CPU-like cost
    big, rows = fastest_tree(acc, flat)
    small, _ = fastest_tree(acc, steep)
    assert big.num_nodes == 32 and small.num_nodes < big.num_nodes
    assert [r["nodes"] for r in rows] == [2, 4, 8, 16, 32]
    r8 = rows[2]
    assert r8["expected_tau"] == pytest.approx(expected_accept_length(Tree.from_accuracies(acc, 8), acc))
    assert r8["expected_speedup"] == pytest.approx(r8["expected_tau"] / r8["cost"])
    with pytest.raises(ValueError, match="at least one tree size"):
        fastest_tree(acc, {})


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40))
def test_from_accuracies_always_valid(k, n):
    tree = Tree.from_accuracies(standard_accuracies(k), n)
    assert tree.num_nodes == min(n, 11 if k == 1 else n) and tree.depth <= k
    # expected length grows with the node budget
    if n > 1:
        assert expected_accept_length(tree, standard_accuracies(k)) >= expected_accept_length(
            Tree.from_accuracies(standard_accuracies(k), n - 1), standard_accuracies(k))


def test_fastest_tree_counts_the_heads_own_cost():
    acc = standard_accuracies(3)
    costs = {2: 1.1, 4: 1.2, 8: 1.5}
    _, free = fastest_tree(acc, costs)
    _, paid = fastest_tree(acc, costs, draft_cost=0.3)
    for a, b in zip(free, paid):
        assert b["cost"] == pytest.approx(a["cost"] + 0.3) and b["expected_speedup"] < a["expected_speedup"]
    _, grows = fastest_tree(acc, costs, draft_cost={2: 0.1, 4: 0.2, 8: 0.4})  # Hydra: drafting grows with n
    assert [r["drafting"] for r in grows] == [0.1, 0.2, 0.4]
    assert all(r["cost"] == pytest.approx(r["verify"] + r["drafting"]) for r in grows)

"""Drafters behind one interface: prompt lookup, the hybrid, token trees; lossless greedy for every kind."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_lib.backbone import Backbone, as_backbone
from medusa_lib.data import chat_ids
from medusa_lib.decoding import greedy_generate, medusa_generate
from medusa_lib.drafters import (
    Draft,
    Drafter,
    HeadsDrafter,
    HybridDrafter,
    PromptLookupDrafter,
    as_drafter,
    lookup,
    token_tree,
)
from medusa_lib.heads import MedusaModel
from medusa_lib.tree import Tree

COPY_PROMPT = ("Repeat this list, then add one more item: red apple, green pear, red apple, green pear, "
               "yellow banana, red apple, green pear.")


def test_lookup_continues_the_latest_earlier_match_of_the_longest_suffix():
    ids = [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3]
    assert lookup(ids, max_ngram=3, depth=2, branches=3) == [[7, 5], [9, 1]]  # latest first, then the older one
    assert lookup(ids, max_ngram=3, depth=2, branches=1) == [[7, 5]]
    assert lookup([4, 5, 6], max_ngram=3) == []  # nothing repeats
    assert lookup([8, 1, 8], max_ngram=3, depth=3) == [[1, 8]]  # falls back to a shorter n-gram


def test_token_tree_merges_shared_prefixes_and_keeps_a_budget():
    d = token_tree(5, [[1, 2, 3], [1, 2, 4], [6]])
    assert d.tokens[0] == 5 and d.tree.num_nodes == 1 + 5  # 1, 2, 3, 4, 6: the prefix [1, 2] is shared
    assert sorted(map(tuple, d.sequences())) == [(1, 2, 3), (1, 2, 4), (6,)]
    assert d.sequences()[0] == [1, 2, 3]  # best first: the first sequence given
    cut = token_tree(5, [[1, 2, 3], [6, 7]], budget=4)
    assert cut.tree.num_nodes == 5 and cut.sequences() == [[1, 2, 3], [6]]
    empty = token_tree(5, [])
    assert empty.tree.num_nodes == 1 and empty.tokens.tolist() == [5]


def test_hybrid_splits_its_budget_by_what_each_drafter_got_accepted(tiny):
    model, _ = tiny

    class Fixed(Drafter):
        def __init__(self, seq):
            self.seq, self.backbone = seq, as_backbone(model)

        def propose(self, h, root, context):
            return token_tree(root, [self.seq])

    good, bad = Fixed([1, 2, 3, 4]), Fixed([9, 9, 9, 9])
    hybrid = HybridDrafter([good, bad], budget=6)
    assert hybrid.shares() == [3, 3]  # no evidence yet: an even split
    for _ in range(10):
        step = hybrid.propose(torch.zeros(1, 8), 0, [])
        path = [0] + [i for i, t in enumerate(step.tokens.tolist()) if t in (1, 2, 3)]  # the good one's 3 tokens
        hybrid.accepted(step, path)
    share_good, share_bad = hybrid.shares()
    assert share_good > share_bad >= 1  # credit moves the budget, and every drafter keeps a node


def test_a_dynamic_drafter_takes_no_tree(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="builds its own tree each step"):
        as_drafter(PromptLookupDrafter(Backbone(model)), Tree.default(2))
    mm = MedusaModel.from_base(model, 2)
    assert isinstance(as_drafter(mm), HeadsDrafter) and as_drafter(mm).tree.depth <= 2


def drafters_for(model, seed=0):
    mm = MedusaModel.from_base(model, 3, share_lm_head=True)
    g = torch.Generator().manual_seed(seed)
    for p in mm.heads.parameters():  # perturbed heads: wrong and right guesses both
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    return {"pld": PromptLookupDrafter(Backbone(model), depth=4),
            "hybrid": HybridDrafter([HeadsDrafter(mm, Tree.default(3)), PromptLookupDrafter(mm, depth=4)], budget=8)}


@pytest.mark.parametrize("kind", ["pld", "hybrid"])
def test_every_drafter_is_lossless_on_the_embedded_model(embedded, kind):
    model, tok = embedded
    ids = chat_ids(tok, COPY_PROMPT)
    ref = greedy_generate(model, ids, max_new_tokens=40).new_tokens
    out = medusa_generate(drafters_for(model)[kind], ids, max_new_tokens=40)
    assert torch.equal(out.new_tokens, ref)
    assert out.tau > 1  # the list repeats itself: lookup finds it


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.lists(st.integers(4, 30), min_size=3, max_size=24), kind=st.sampled_from(["pld", "hybrid"]),
       seed=st.integers(0, 3))
def test_lossless_over_random_contexts_on_tiny(tiny, prompt, kind, seed):
    """Small alphabets repeat often, so prompt lookup drafts (and the hybrid overlaps its proposals)."""
    model, _ = tiny
    ids = torch.tensor([prompt])
    ref = greedy_generate(model, ids, max_new_tokens=24).new_tokens
    out = medusa_generate(drafters_for(model, seed)[kind], ids, max_new_tokens=24)
    assert torch.equal(out.new_tokens, ref)


def test_sample_and_typical_run_with_a_dynamic_tree(embedded):
    model, tok = embedded
    ids = chat_ids(tok, COPY_PROMPT)
    for mode in ("sample", "typical"):
        out = medusa_generate(PromptLookupDrafter(Backbone(model)), ids, max_new_tokens=24, mode=mode, seed=0,
                              temperature=0.7)
        assert 0 < out.new_tokens.numel() <= 24 and all(n >= 1 for n in out.accept_lengths)


def test_draft_sequences_are_root_to_leaf_paths():
    d = Draft(Tree.from_choices([[0], [0, 0], [1]]), torch.tensor([7, 1, 2, 3]))  # nodes: root, [0], [1], [0, 0]
    assert d.sequences() == [[1, 3], [2]]

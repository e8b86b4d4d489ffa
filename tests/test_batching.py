import pytest
import torch

from medusa_lib.backbone import Backbone
from medusa_lib.batching import Running, join, keep_rows, stream_greedy
from medusa_lib.decoding import greedy_generate


def _prompts(lengths, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 100, (n,), generator=g).tolist() for n in lengths]


def _refs(mm, prompts, n):
    return [greedy_generate(mm, torch.tensor([p]), max_new_tokens=n, eos_token_id=[]).new_tokens.tolist()
            for p in prompts]


def test_stream_greedy_equals_one_prompt_greedy_with_refills(tiny):
    """Continuous batching (3 slots for 7 prompts, so rows leave at EOS and new prompts join a running,
    longer or shorter cache) gives exactly one-prompt greedy's tokens in fp32."""
    model, _ = tiny
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    prompts = _prompts((12, 3, 5, 30, 7, 9, 4))
    refs = _refs(mm, prompts, 25)
    eos = {refs[1][6], refs[4][12]}  # tokens two answers emit mid-way: every answer must stop at its first
    done = {}
    got = stream_greedy(mm, prompts, 25, eos, batch_size=3, refill=1, on_done=lambda i, t, _: done.update({i: list(t)}))
    for ref, answer in zip(refs, got):
        stop = next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))
        assert answer == ref[:stop]
    assert any(len(a) < 25 for a in got), "no row stopped early: the test would not exercise a refill"
    assert done == dict(enumerate(got))


def test_stream_greedy_budget_and_one_slot(tiny):
    model, _ = tiny
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    prompts = _prompts((6, 2, 9))
    assert stream_greedy(mm, prompts, 5, set(), batch_size=1) == _refs(mm, prompts, 5)


def test_keep_rows_trims_columns_no_row_attends_to(tiny):
    model, _ = tiny
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    from medusa_lib.batching import _prefill

    run = join(_prefill(mm, _prompts((9,)), [0], 0), _prefill(mm, _prompts((3,), seed=4), [1], 0))
    assert run.mask.shape == (2, 9) and run.cache.get_seq_length() == 9
    keep_rows(run, torch.tensor([False, True]))
    assert isinstance(run, Running) and run.rows == [1]
    assert run.mask.shape == (1, 3) and run.cache.get_seq_length() == 3 and bool(run.mask.all())


def test_stream_greedy_keeps_the_state_behind_every_token(tiny):
    """With keep_states, row i's states are the last hidden states at positions len(prompt)-1 .. end-1,
    as a full forward over prompt + answer computes them; each one's argmax is the next token."""
    model, _ = tiny
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    prompts = _prompts((5, 11, 3))
    got = {}
    answers = stream_greedy(mm, prompts, 9, set(), batch_size=2, refill=1, keep_states=True,
                            on_done=lambda i, t, h: got.update({i: h}))
    for i, (p, a) in enumerate(zip(prompts, answers)):
        with torch.no_grad():
            ref = mm.decoder(input_ids=torch.tensor([p + a])).last_hidden_state[0, len(p) - 1: -1]  # [len(a), H]
        assert got[i].dtype == torch.float16 and got[i].shape == ref.shape
        torch.testing.assert_close(got[i].float(), ref, atol=2e-3, rtol=2e-3)


def test_sliding_window_caches_batch_without_joins():
    """A Mistral-style cache counts its own length, so it is never padded or trimmed from outside:
    new prompts wait for an empty batch, and the answers still equal one-prompt greedy."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, sliding_window=6,
                        pad_token_id=0)
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).eval()
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    prompts = [[int(t) for t in torch.randint(4, 99, (n,))] for n in (3, 9, 1, 14, 5)]
    refs = _refs(mm, prompts, 10)
    eos = {refs[1][3]}
    got = stream_greedy(mm, prompts, 10, eos, batch_size=2, refill=1)
    for ref, answer in zip(refs, got):
        stop = next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))
        assert answer == ref[:stop]


def test_stream_greedy_refuses_bad_calls(tiny):
    model, _ = tiny
    mm = Backbone(model)  # the decoder and lm_head only: no heads
    with pytest.raises(ValueError, match="at least one token"):
        stream_greedy(mm, [[5, 6], []], 4, set())
    with pytest.raises(ValueError, match="pass on_done"):
        stream_greedy(mm, [[5, 6]], 4, set(), keep_states=True)
    with pytest.raises(ValueError, match=">= 1"):
        stream_greedy(mm, [[5, 6]], 0, set())

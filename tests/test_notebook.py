"""medusa_lib.notebook: the cells every notebook shares."""

import pytest
import torch

from medusa_lib import notebook


def test_heldout_set_generates_only_the_prompts_it_returns(tiny, monkeypatch):
    """Another backbone than the shipped heads' answers just the n prompts picked (a rehearsed T4 once generated
    every held-out answer at full length, for 3 of them)."""
    asked = []

    def fake(model, tok, prompts, max_new_tokens, *a, **k):
        asked.append((len(prompts), max_new_tokens))
        return [{"prompt_ids": [1], "response_ids": [2] * max_new_tokens} for _ in prompts]

    monkeypatch.setattr(notebook, "self_distill_data", fake)
    prompts, rows = notebook.heldout_set(*tiny, n=3)
    assert len(prompts) == len(rows) == 3 and asked == [(3, notebook.smoke(notebook.SD_TOKENS, 16))]
    assert len({p.category for p in prompts}) == 3  # spread over the categories


def test_peak_memory_says_what_it_counts():
    assert "peak RSS" in notebook.peak_memory(torch.device("cpu"))
    notebook.reset_peak_memory(torch.device("cpu"))  # a no-op off CUDA


def test_load_model_rejects_a_typo_before_loading_anything(monkeypatch):

    monkeypatch.setattr(notebook, "load_base", lambda *a, **k: pytest.fail("a model loaded before the check"))
    with pytest.raises(ValueError, match="unknown profile 'tinyy'"):
        notebook.load_model("tinyy")

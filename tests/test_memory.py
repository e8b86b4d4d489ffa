import importlib.util
from pathlib import Path

import pytest

from medusa_lib.memory import (
    PHASES,
    T4_BUDGET_GIB,
    backbone_params,
    generation_batch,
    memory_budget,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["t4", "llama2-7b-qlora"])
def test_every_phase_fits_a_t4(profile):
    budget = memory_budget(profile)
    assert set(budget["phases"]) == set(PHASES)
    assert all(0 < gib <= T4_BUDGET_GIB for gib in budget["phases"].values()), budget["phases"]
    assert budget["total_gib"] == max(budget["phases"].values())
    assert budget["phases"][budget["peak_phase"]] == budget["total_gib"]
    assert abs(sum(budget["medusa-2 parts"].values()) - budget["phases"]["medusa-2 step"]) < 1e-9


def test_the_7b_weights_and_batches_are_counted():
    budget = memory_budget("llama2-7b-qlora")
    assert budget["medusa-2 parts"]["weights"] > 3  # 6.5B NF4 weights plus fp32 embeddings: GiB, not MiB
    bigger = memory_budget("llama2-7b-qlora", batch_size=4, block_size=1024)
    assert bigger["phases"]["medusa-2 step"] > budget["phases"]["medusa-2 step"]
    assert memory_budget("llama2-7b-qlora", generation_batch_size=128)["phases"]["generation"] > 20  # notebook 03's


def test_generation_batch_shrinks_as_the_kv_per_token_grows():
    small, large = generation_batch("t4"), generation_batch("llama2-7b-qlora")  # 22 KB vs 512 KB a token
    assert large < small and 16 <= large < 128
    assert generation_batch("llama2-7b-qlora", new_tokens=512) < large
    assert generation_batch("llama2-7b-qlora", budget_gib=10) < large


def test_plain_lora_without_checkpointing_does_not_fit():
    assert memory_budget("t4", checkpointing=False)["phases"]["medusa-2 step"] > 20  # what add_lora now avoids


def test_backbone_params_from_the_shipped_configs():
    assert backbone_params("embedded") == 134_515_008  # SmolLM2-135M-Instruct, counted by the loaded model
    assert 6.7e9 < backbone_params("llama2-7b-qlora") < 6.8e9  # Llama-2-7B: 6.74B


def _measure_script():
    spec = importlib.util.spec_from_file_location("measure_memory", ROOT / "scripts" / "measure_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux")
def test_generation_figure_agrees_with_a_measurement():
    """A 2-layer model of the 7B's layout at 1/16 of its widths, fp32: the generation phase's figure is
    within 25% of the peak memory measured in a fresh process (KV cache, prefill and weights)."""
    m = _measure_script()
    c, sizes = m.shapes(16, 2), dict(batch=16, prompt=64, new=16)
    got = m.measure("generation", c, "float32", sizes)
    model = m.predicted("generation", c, 4, sizes)
    assert abs(model / got["measured"] - 1) < 0.25, (model, got)
    above = (model - got["params"]) / (got["measured"] - got["params"])  # what is not the weights
    assert 0.6 < above < 1.5, above

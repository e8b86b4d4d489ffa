"""Data: prompts, chat encoding, corpus packing, and self-distillation data.

Medusa's heads learn best from the model's own outputs (Cai et al., 2024, Sec. 2.3.2,
"self-distillation"): the heads must predict what *this* backbone will say, so we let the
backbone answer a prompt set and train on its answers. Plain text (WikiText on Colab, local
files offline) is chunked and packed into fixed blocks for KD on soft teacher targets.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from medusa_lib.backbone import as_backbone
from medusa_lib.batching import stream_greedy
from medusa_lib.files import atomic_dir, atomic_path, atomic_write_bytes, cache_dir, check_writable, read_tensors
from medusa_lib.models import hub_reachable

ASSETS = Path(__file__).parent / "assets"
COMMITTED = Path(__file__).resolve().parents[1] / "data" / "selfdistill"  # in a checkout of the repository
PROMPTS_FILE = ASSETS / "prompts.jsonl"
CATEGORIES = ("chat", "qa", "math", "code", "summarization", "extraction", "translation")  # train and held out
# held out only, copy-heavy: a question over given passages, a function to modify (what prompt lookup is for)
HELDOUT_ONLY = ("documents", "code_edit")


@dataclass
class Prompt:
    id: str
    category: str
    prompt: str
    split: str  # "train" or "heldout"


def load_prompts(split: str | None = None, categories=None) -> list[Prompt]:
    """The shipped prompt set (fixed train/held-out split). Every tau figure uses "heldout"."""
    rows = [Prompt(**json.loads(line)) for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    if split is not None:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        rows = [r for r in rows if r.split == split]
    if categories is not None:
        rows = [r for r in rows if r.category in set(categories)]
    return rows


TEMPLATES_FILE = ASSETS / "prompt_templates.json"


def template_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """`n` extra *training* prompts built from templates (topics, code tasks, math with random numbers,
    standard-library docstrings to summarise or mine), in the shipped set's category mix.

    The 240 hand-written prompts are too few to train heads on (they overfit); these add volume.
    They are never held out: every tau figure stays on the hand-written held-out prompts.
    """
    from collections import Counter

    rng = random.Random(seed)
    spec = json.loads(TEMPLATES_FILE.read_text())
    docs = _stdlib_docstrings()
    fill = {
        "chat": lambda t: t.format(t=rng.choice(spec["topics"])),
        "qa": lambda t: t.format(t=rng.choice(spec["topics"])),
        "code": lambda t: t.format(c=rng.choice(spec["code_tasks"])),
        "math": lambda t: t.format(a=rng.randint(2, 99), b=rng.randint(2, 12), c=rng.randint(20, 500),
                                   p=rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75])),
        "summarization": lambda t: t.format(d=rng.choice(docs)),
        "extraction": lambda t: t.format(d=rng.choice(docs)),
        "translation": lambda t: t.format(l=rng.choice(spec["languages"]), s=rng.choice(spec["sentences"])),
    }
    hand_written = load_prompts()
    # the category mix to follow; held-out-only categories have no templates (and came last: the draws, and so
    # the committed template answers, are those of before they were added)
    shipped = Counter(p.category for p in hand_written if p.category in CATEGORIES)
    seen, out, misses = {p.prompt for p in hand_written}, [], 0
    while len(out) < n and misses < 100:  # stop if the template space runs dry
        cat = rng.choices(list(shipped), weights=list(shipped.values()))[0]
        for _ in range(200):  # redraw within the category, so a crowded one keeps its share of the mix
            text = fill[cat](rng.choice(spec[cat]))
            if text not in seen:
                break
        misses = misses + 1 if text in seen else 0
        if text not in seen:
            seen.add(text)
            out.append(Prompt(f"tmpl-{len(out):05d}", cat, text, "train"))
    if len(out) < n:
        raise ValueError(f"the templates give only {len(out)} distinct prompts, fewer than n={n}")
    return out


@functools.lru_cache(maxsize=1)
def _stdlib_sources() -> list[tuple[str, str, object]]:
    """(module name, source, parsed ast) of every top-level module of the standard library that parses."""
    import ast

    out = []
    for f in sorted(offline_text_dir().glob("*.py")):
        try:
            text = f.read_text(errors="ignore")
            out.append((f.stem, text, ast.parse(text)))
        except (SyntaxError, ValueError):
            continue
    return out


@functools.lru_cache(maxsize=1)
def _stdlib_docstrings(min_chars: int = 200, max_chars: int = 1000) -> list[str]:
    """Module, class and function docstrings of the standard library, of a readable length (real text)."""
    import ast

    docs = []
    for _, _, tree in _stdlib_sources():
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        docs += [d.strip() for d in map(ast.get_docstring, nodes) if d and min_chars <= len(d) <= max_chars]
    return docs


# ----------------------------------------------------------------------------- copy-heavy training prompts

# What the copy-heavy held-out groups ask (`documents`, `code_edit`), in other words and on other text: the
# answers quote or rewrite a long context, which is where the drafters' tau was lowest.
DOCUMENT_QUESTIONS = (
    "What does `{a}` do, according to the passages? Quote the sentence that says so.",
    "Which passage describes `{a}`, and what does it say about its arguments?",
    "How do `{a}` and `{b}` differ? Support your answer with quotes from the passages.",
    "List everything the passages say about `{a}`, quoting them where you can.",
)
CODE_EDITS = (
    "Add type hints to every parameter and to the return value, and change nothing else. Return the whole "
    "modified function.",
    "Rename this function to `{name}_checked` and change nothing else. Return the whole modified function.",
    "Add a short comment above each block of code that says what it does; keep the code exactly as it is. Return "
    "the whole function with the comments.",
    "Add a keyword parameter `verbose` (default False); when it is True, print a line before each return. Keep "
    "everything else as it is, and return the whole modified function.",
    "Rewrite the docstring in plainer words for a beginner, and keep the code exactly as it is. Return the whole "
    "function.",
)


@functools.lru_cache(maxsize=1)
def _stdlib_functions(min_chars: int = 300, max_chars: int = 1400) -> list[str]:
    """The source of the standard library's top-level functions, of a length a prompt can quote whole."""
    import ast

    sources = []
    for _, text, tree in _stdlib_sources():
        for node in tree.body:
            src = ast.get_source_segment(text, node) if isinstance(node, ast.FunctionDef) else None
            if src and min_chars <= len(src) <= max_chars and src.isascii():
                sources.append(src)
    return sources


@functools.lru_cache(maxsize=1)
def _stdlib_passages(min_chars: int = 200, max_chars: int = 700) -> list[tuple[str, str]]:
    """(name, docstring on one line) of the standard library's top-level functions and classes."""
    import ast

    out = []
    for module, _, tree in _stdlib_sources():
        for node in tree.body:
            doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else None
            if doc and min_chars <= len(doc) <= max_chars and doc.isascii():
                out.append((f"{module}.{node.name}", " ".join(doc.split())))
    return out


def copy_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """`n` long-context, copy-heavy *training* prompts, half `documents` and half `code_edit`, built offline
    from the standard library: questions over three docstrings to answer with quotes, and a function's
    source to return modified. Like the template prompts, they are never held out."""
    rng = random.Random(seed)
    docs, funcs = _stdlib_passages(), _stdlib_functions()
    if len(docs) < 3 or not funcs:
        raise ValueError(f"the standard library under {offline_text_dir()} gives too little text to build on")
    seen, out = {p.prompt for p in load_prompts()}, []
    for _ in range(20 * n):
        if len(out) == n:
            break
        if len(out) % 2 == 0:
            cat, text = "documents", _documents_prompt(rng, docs)
        else:
            cat, text = "code_edit", _code_edit_prompt(rng, funcs)
        if text not in seen:
            seen.add(text)
            out.append(Prompt(f"copy-{len(out):05d}", cat, text, "train"))
    if len(out) < n:
        raise ValueError(f"the standard library gives only {len(out)} distinct copy-heavy prompts, fewer than n={n}")
    return out


def _documents_prompt(rng: random.Random, docs: list[tuple[str, str]]) -> str:
    """Three (name, docstring) passages and a question about one or two of them."""
    picked = rng.sample(docs, 3)
    body = "\n\n".join(f"Passage {i + 1} ({name}): {doc}" for i, (name, doc) in enumerate(picked))
    a, b = rng.sample([name for name, _ in picked], 2)
    return ("Using only the passages below, answer the question and quote the passages that support your answer."
            f"\n\n{body}\n\nQuestion: {rng.choice(DOCUMENT_QUESTIONS).format(a=a, b=b)}")


def _code_edit_prompt(rng: random.Random, funcs: list[str]) -> str:
    """A function's source and an edit to make to it."""
    src = rng.choice(funcs)
    name = src.split("(", 1)[0].removeprefix("def ").strip()
    edit = rng.choice(CODE_EDITS).format(name=name)
    return f"Here is a function from Python's standard library:\n\n```python\n{src}\n```\n\n{edit}"


def chat_text(tok, prompt: str) -> str:
    """The prompt wrapped in the tokenizer's chat template, ready for the assistant's turn."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)


def chat_ids(tok, prompt: str) -> torch.Tensor:
    """[1, T] input ids of one chat prompt."""
    return tok(chat_text(tok, prompt), return_tensors="pt", add_special_tokens=False).input_ids


def fingerprint(*parts) -> str:
    """A short stable hash of anything JSON-serialisable (used as a cache key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------- self-distillation


def distill_cache_dir(model, prompts: list[str], max_new_tokens: int, root=None, batch_size: int = 16) -> Path:
    """Where the responses of `model` to `prompts` are cached, keyed by model, its weights, and prompt hash."""
    name = getattr(model.config, "name_or_path", "model")
    key = fingerprint(name, model.config.vocab_size, model.config.hidden_size, weights_fingerprint(model),
                      str(model.dtype), prompts, max_new_tokens, batch_size)  # batch size: rounding differs
    return Path(root or cache_dir() / "distill") / f"{Path(str(name)).name}-{key}"


@torch.no_grad()
def weights_fingerprint(model) -> str:
    """A cheap digest of the output projection: other weights (or another dtype) never reuse a cache."""
    w = model.get_output_embeddings().weight
    return f"{float(w[:16].double().sum()):.10e}/{float(w[-16:].double().abs().sum()):.10e}"


def self_distill_data(model, tok, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 16,
                      root=None, progress: bool = True, shard_size: int = 64, keep_states: bool = False) -> list[dict]:
    """The base model's own greedy answers to `prompts` (Medusa paper Sec. 2.3.2).

    Continuous batching (`batching.stream_greedy`) with the chat template: `batch_size` rows
    generate at every step, a finished row is replaced by the next prompt. Finished answers are
    written `shard_size` at a time to gzipped shards, so an interrupted run keeps them and the next
    call resumes with the rest. Returns one dict per prompt: `{"prompt_ids": [...], "response_ids":
    [...]}` (token ids; the response ends at EOS if reached). `keep_states` also saves, next to each
    shard, the hidden states generation computed anyway (`read_states`), so training needs no backbone pass.
    """
    if not prompts:
        raise ValueError("self_distill_data needs at least one prompt")
    folder = distill_cache_dir(model, prompts, max_new_tokens, root, batch_size)
    rows = read_shards(folder)
    todo = [i for i in range(len(prompts)) if i not in rows]
    if todo:
        rows.update(_generate(model, tok, [prompts[i] for i in todo], todo, max_new_tokens, batch_size, folder,
                              progress, shard_size, keep_states))
    return [rows[i] for i in range(len(prompts))]


def read_shards(folder: Path) -> dict[int, dict]:
    """Every finished answer saved under `folder`: {prompt index: row}."""
    rows = {}
    for shard in sorted(Path(folder).glob("shard-*.json.gz")):
        rows.update({int(k): v for k, v in json.loads(gzip.decompress(shard.read_bytes())).items()})
    return rows


def read_states(folder: Path) -> dict[int, torch.Tensor]:
    """The hidden states saved with the answers under `folder` (where kept): {prompt index: [n, H] fp16}."""
    states = {}
    for part in sorted(Path(folder).glob("states-*.pt")):
        states.update(read_tensors(part, "delete it: the answers stay, and their states are computed again"))
    return states


def _generate(model, tok, prompts, index, max_new_tokens, batch_size, folder, progress, shard_size,
              keep_states=False) -> dict:
    """Answers to `prompts` (global ids `index`), saved as they finish; useful tokens/s on the bar."""
    from tqdm.auto import tqdm

    ids = [chat_ids(tok, p)[0].tolist() for p in prompts]
    bar, t0, done, made = tqdm(total=len(ids), desc="self-distill", disable=not progress), time.perf_counter(), {}, [0]
    pending, pending_states = {}, {}

    def finished(i: int, answer: list[int], states) -> None:
        pending[index[i]] = done[index[i]] = {"prompt_ids": ids[i], "response_ids": list(answer)}
        if states is not None:
            pending_states[index[i]] = states
        made[0] += len(answer)
        bar.update(1)
        bar.set_postfix(answer_tok_s=f"{made[0] / (time.perf_counter() - t0):.0f}")  # useful tokens only
        if len(pending) >= shard_size or len(done) == len(ids):
            _write_shard(folder, pending, pending_states)

    stream_greedy(as_backbone(model), ids, max_new_tokens, {tok.eos_token_id}, tok.pad_token_id, batch_size,
                  on_done=finished, keep_states=keep_states)
    bar.close()
    return done


def _write_shard(folder: Path, pending: dict, pending_states: dict) -> None:
    """Save and forget the pending answers (named by their first prompt index, so never overwritten);
    their states first, so a shard on disk always has its states if they were kept."""
    name = f"{min(pending):06d}-{len(pending):04d}"
    if pending_states:
        with atomic_path(Path(folder) / f"states-{name}.pt") as tmp:
            torch.save(pending_states, tmp)
    data = gzip.compress(json.dumps({str(k): v for k, v in pending.items()}).encode())
    atomic_write_bytes(Path(folder) / f"shard-{name}.json.gz", data)
    pending.clear()
    pending_states.clear()


def draft_vocab(rows, size: int, vocab_size: int) -> torch.Tensor:
    """The `size` most frequent response tokens in `rows` (ties and the rest filled by id order).

    The heads then propose only these tokens (`MedusaModel.set_draft_vocab`), which cuts their
    projection cost by V / size in training and decoding. Verification still uses the full vocab.
    """
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for r in rows:
        ids = torch.tensor(r["response_ids"], dtype=torch.long)
        counts += torch.bincount(ids[ids < vocab_size], minlength=vocab_size)
    order = torch.argsort(-counts * vocab_size + torch.arange(vocab_size))  # count desc, then id asc
    return order[: min(size, vocab_size)].sort().values


# ----------------------------------------------------------------------------- corpus and packing

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
WIKITEXT = {"wikitext": "wikitext-2-raw-v1", "wikitext-2": "wikitext-2-raw-v1", "wikitext-103": "wikitext-103-raw-v1"}


def load_corpus(name_or_path, max_chars: int | None = None) -> list[str]:
    """Texts from a local file or folder (offline), or WikiText through `datasets` (hub)."""
    path = Path(str(name_or_path))
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no text files ({', '.join(TEXT_SUFFIXES)}); "
                             f"put UTF-8 text files there, or pass one file")
        return _read_texts(files, max_chars)
    if str(name_or_path) in WIKITEXT:
        return _load_wikitext(WIKITEXT[str(name_or_path)], max_chars)
    raise FileNotFoundError(f"{name_or_path!r} is neither a local file/folder nor one of {list(WIKITEXT)}")


def _read_texts(files, max_chars):
    """Read strictly as UTF-8 (a leading BOM is dropped): a Latin-1 or binary file fails, naming it."""
    def read(f: Path) -> str:
        try:
            return f.read_text(encoding="utf-8-sig").strip()
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8 "
                             f"(e.g. iconv -f latin1 -t utf-8) or remove it from the corpus") from None

    texts = _take_chars(map(read, files), max_chars)
    if not texts:
        raise ValueError(f"no text found in {[str(f) for f in files[:3]]}...")
    return texts


def _load_wikitext(config: str, max_chars):
    if not hub_reachable():
        raise OSError("WikiText needs the Hugging Face hub, which is unreachable; offline, pass a local folder "
                      "of text files instead (--text_dir DIR, or load_corpus(DIR))")
    import datasets

    texts = [t for t in datasets.load_dataset("wikitext", config, split="train")["text"] if t.strip()]
    return _take_chars(texts, max_chars)


def _take_chars(texts, max_chars):
    """Non-empty texts in order, until about `max_chars` characters are collected."""
    out, total = [], 0
    for t in texts:
        if not t:
            continue
        out.append(t)
        total += len(t)
        if max_chars is not None and total >= max_chars:
            break
    return out


def offline_text_dir() -> Path:
    """Real text that ships with Python itself: the standard library's sources and docstrings."""
    import json as _json  # any stdlib module tells where the stdlib lives

    return Path(_json.__file__).parent.parent


def pack(tok, texts: list[str], block_size: int):
    """Tokenize, concatenate (EOS between texts) and cut into `block_size` blocks.

    Returns a `datasets.Dataset` with one column, "input_ids"; the tail shorter than a block is dropped.
    """
    import datasets

    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    ds = datasets.Dataset.from_dict({"text": texts})
    eos = tok.eos_token_id

    def tokenize(batch):
        return {"ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}

    def chunk(batch):
        flat = [t for ids in batch["ids"] for t in ids]
        n = len(flat) // block_size * block_size
        return {"input_ids": [flat[i:i + block_size] for i in range(0, n, block_size)]}

    ds = ds.map(tokenize, batched=True, remove_columns=["text"])
    blocks = ds.map(chunk, batched=True, batch_size=1000, remove_columns=["ids"])
    if len(blocks) == 0:
        n = sum(map(len, ds["ids"]))
        raise ValueError(f"the corpus has {n} tokens, fewer than one block of {block_size}; "
                         f"use a smaller --block_size or more text")
    return blocks


DATA_RECORD = "medusa_data.json"  # beside packed blocks: which tokenizer made them


def tokenizer_id(tok) -> dict:
    """What makes token ids mean the same thing: the vocabulary (a hash of it) and its size."""
    vocab = json.dumps(sorted(tok.get_vocab().items()))
    return {"tokenizer": str(tok.name_or_path or ""), "vocab_size": len(tok),
            "vocab_sha1": hashlib.sha1(vocab.encode()).hexdigest()[:16]}


def save_blocks(blocks, out, tok, model_name: str) -> Path:
    """Packed blocks and their tokenizer's record, written whole: a failed write keeps the folder as it was."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        blocks.save_to_disk(str(tmp))
        record = {"model": model_name, "blocks": len(blocks), "block_size": len(blocks[0]["input_ids"]),
                  **tokenizer_id(tok)}
        atomic_write_bytes(tmp / DATA_RECORD, json.dumps(record, indent=1).encode())
    return out


def check_blocks_out(out, text_dir=None) -> Path:
    """Where preprocess_data may write: a new or empty folder, or an earlier dataset (replaced whole), never a
    folder of other files nor the corpus it reads."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    if text_dir is not None and Path(text_dir).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} holds the corpus --text_dir {text_dir}: writing there would replace it; "
                         f"choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / DATA_RECORD).exists():
        raise FileExistsError(f"--out {out} holds other files (no {DATA_RECORD} of an earlier dataset); "
                              f"choose a new or empty folder")
    check_writable(out.absolute().parent, "--out's parent folder")  # the new dataset is written beside it first
    return out


def load_blocks(folder, tok):
    """Packed blocks written by `save_blocks`, refused if another tokenizer made them."""
    import datasets

    folder = Path(folder)
    record = folder / DATA_RECORD
    if not record.exists():
        raise ValueError(f"--data {folder} does not say which tokenizer made it (no {DATA_RECORD}); write it again "
                         f"with preprocess_data --model <this model>")
    saved, mine = json.loads(record.read_text()), tokenizer_id(tok)
    if saved.get("vocab_sha1") != mine["vocab_sha1"]:
        raise ValueError(f"--data {folder} was tokenized for {saved.get('model')!r} ({saved.get('vocab_size')} "
                         f"tokens); this model's tokenizer is another ({mine['vocab_size']} tokens), so its ids "
                         f"would mean other words: run preprocess_data --model <this model> first")
    return datasets.load_from_disk(str(folder))


def blocks_to_rows(blocks) -> list[dict]:
    """Packed blocks as training rows (no prompt part: every position is a target)."""
    return [{"prompt_ids": [], "response_ids": list(b)} for b in blocks["input_ids"]]


# ----------------------------------------------------------------------------- recipes

SD_TOKENS = 256  # new tokens per self-distilled answer to a hand-written prompt
HELDOUT_FILE = "heldout_selfdistill.json"  # shipped with the heads: the held-out answers they are scored on


def selfdistill_rows(model, tok, split: str, n: int | None = None, max_new_tokens: int = SD_TOKENS) -> list[dict]:
    """Self-distilled answers to the hand-written prompts of `split` ("train" or "heldout"), cached."""
    prompts = [p.prompt for p in load_prompts(split)][:n]
    return self_distill_data(model, tok, prompts, max_new_tokens, batch_size=16)


def heldout_rows(model, tok, n: int | None = None, heads_dir=None) -> list[dict]:
    """The held-out answers heads are scored on: shipped next to `heads_dir` if there, else generated."""
    shipped = Path(heads_dir) / HELDOUT_FILE if heads_dir else None
    if shipped is not None and shipped.exists():
        return json.loads(shipped.read_text())[:n]
    return selfdistill_rows(model, tok, "heldout", n)


def spread(items: list, n: int | None) -> list:
    """`n` items evenly spaced over `items` (all of them when n is None). The held-out prompts are ordered by
    category, so a spread covers every category where the first n would all be chat."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def template_rows(model, tok, n: int, chunk: int = 256, max_new_tokens: int = 192, batch_size: int = 64,
                  progress: bool = True, root=None, start: int = 0) -> list[dict]:
    """Self-distilled answers to template prompts `start` .. `n`, generated (and cached under `root`)
    `chunk` prompts at a time, so a long run that is stopped keeps every finished answer."""
    prompts = [p.prompt for p in template_prompts(n)]
    committed = committed_answers(model, tok, prompts[start:n], max_new_tokens)
    if committed is not None:
        return committed
    rows = []
    for i in range(start, n, chunk):
        rows += self_distill_data(model, tok, prompts[i:i + chunk], max_new_tokens, batch_size, root=root,
                                  progress=progress)
    return rows


def committed_answers(model, tok, prompts: list[str], max_new_tokens: int, root=None) -> list[dict] | None:
    """`model`'s answers to every one of `prompts`, as `scripts/generate_data.py` committed them under `root`
    (a checkout of the repository has them; a pip install does not), or None when any is missing there or was
    cut at another length. The committed answers were generated in fp32 or bf16 on a CPU: training data
    needs no bitwise match."""
    root = COMMITTED if root is None else root
    if not Path(root).is_dir():
        return None
    saved = {tuple(r["prompt_ids"]): r for r in saved_rows(root, model)}
    rows = [saved.get(tuple(chat_ids(tok, p)[0].tolist())) for p in prompts]
    if any(r is None or len(r["response_ids"]) > max_new_tokens for r in rows):
        return None
    return [{"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"]} for r in rows]


def saved_rows(root, model=None, states: bool = False) -> list[dict]:
    """Every self-distilled answer saved under `root` (one folder per model and prompt chunk), in a
    stable order; what `scripts/generate_data.py` commits, read back without regenerating.

    `model` keeps only its own folders (by name). A prompt answered twice (another batch size or
    dtype) counts once. With `states`, rows whose hidden states were kept carry row["states"] [n, H]."""
    name = Path(str(getattr(model.config, "name_or_path", "model"))).name if model is not None else None
    rows, seen = [], set()
    for folder in sorted(f for f in Path(root).iterdir() if f.is_dir()):
        if name is not None and folder.name.rsplit("-", 1)[0] != name:
            continue
        kept = read_states(folder) if states else {}
        for i, row in sorted(read_shards(folder).items()):
            if tuple(row["prompt_ids"]) not in seen:
                seen.add(tuple(row["prompt_ids"]))
                rows.append(dict(row, states=kept[i]) if i in kept else row)
    return rows


def text_rows(tok, positions: int, block_size: int = 256, seed: int = 0) -> list[dict]:
    """About `positions` tokens of the Python standard library's text: packed, shuffled blocks."""
    texts = load_corpus(offline_text_dir(), max_chars=positions * 5)
    rows = blocks_to_rows(pack(tok, texts, block_size))
    random.Random(seed).shuffle(rows)
    return rows[: max(1, positions // block_size)]


def take_positions(rows: list[dict], positions: int) -> list[dict]:
    """The first rows that hold about `positions` response tokens."""
    out, n = [], 0
    for r in rows:
        if n >= positions:
            break
        out.append(r)
        n += len(r["response_ids"])
    return out

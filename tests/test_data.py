import re

import pytest

from medusa_lib import data


def test_prompt_set_has_fixed_split_and_categories():
    rows = data.load_prompts()
    assert len(rows) >= 200 and {r.category for r in rows} == set(data.CATEGORIES) | set(data.HELDOUT_ONLY)
    assert not {r.category for r in rows if r.split == "train"} & set(data.HELDOUT_ONLY)
    held = data.load_prompts("heldout")
    assert 50 <= len(held) <= 70 and all(r.split == "heldout" for r in held)
    assert len({r.id for r in rows}) == len(rows)
    with pytest.raises(ValueError, match="split must be"):
        data.load_prompts("test")


def test_template_prompts_are_distinct_training_prompts_in_every_category():
    ps = data.template_prompts(300, seed=1)
    assert len(ps) == 300 and len({p.prompt for p in ps}) == 300
    assert {p.split for p in ps} == {"train"}
    assert {p.category for p in ps} == set(data.CATEGORIES)
    assert not {p.prompt for p in ps} & {p.prompt for p in data.load_prompts("heldout")}
    assert [p.prompt for p in data.template_prompts(20, seed=1)] == [p.prompt for p in ps[:20]]  # reproducible
    assert not any(re.search(r"\{[a-z]\}", p.prompt) for p in ps)  # every slot filled


def test_copy_prompts_are_long_distinct_training_prompts_that_quote_their_context():
    ps = data.copy_prompts(40, seed=1)
    assert len({p.prompt for p in ps}) == 40 and {p.split for p in ps} == {"train"}
    assert [p.category for p in ps[:4]] == ["documents", "code_edit", "documents", "code_edit"]
    assert not {p.prompt for p in ps} & {p.prompt for p in data.load_prompts()}
    assert [p.prompt for p in data.copy_prompts(6, seed=1)] == [p.prompt for p in ps[:6]]  # reproducible
    assert min(len(p.prompt) for p in ps) > 400  # a long context to copy from
    for p in ps:
        assert not re.search(r"\{[a-z]+\}", p.prompt.split("\n\n")[-1])  # the question or edit has its slots filled
        if p.category == "documents":
            named = re.findall(r"`([\w.]+)`", p.prompt.rsplit("Question:", 1)[1])
            assert named and all(f"({n}):" in p.prompt for n in named)  # asks about passages it gives
        else:
            assert "```python\ndef " in p.prompt


def test_template_file_has_the_right_slots_in_plain_ascii():
    import json
    import string

    spec = json.loads(data.TEMPLATES_FILE.read_text())
    slots = {"chat": {"t"}, "qa": {"t"}, "code": {"c"}, "translation": {"l", "s"}, "summarization": {"d"},
             "extraction": {"d"}}
    for key, items in spec.items():
        assert len({x.lower() for x in items}) == len(items), key  # no repeated entry
        for x in items:
            assert x.isascii(), x
            names = {f for _, f, _, _ in string.Formatter().parse(x) if f is not None}
            if key == "math":
                assert names and names <= {"a", "b", "c", "p"}, x
            elif key in slots:
                assert names == slots[key], x
            else:  # fillers (topics, code_tasks, sentences, languages) hold no braces
                assert "{" not in x and "}" not in x, x


def test_template_prompts_keep_the_hand_written_mix_at_15000():
    from collections import Counter

    hand = data.load_prompts()
    mix = Counter(p.category for p in hand)
    ps = data.template_prompts(15000)
    assert len({p.prompt for p in ps}) == 15000
    assert not {p.prompt for p in ps} & {p.prompt for p in hand}
    got = Counter(p.category for p in ps)
    shares = {c: (round(got[c] / len(ps), 3), round(mix[c] / len(hand), 3)) for c in data.CATEGORIES}
    assert all(abs(g - h) <= 0.02 for g, h in shares.values()), shares  # (templates, hand-written)


def test_pack_conserves_tokens(tiny):
    _, tok = tiny
    texts = ["hello world", "a much longer text about packing " * 5, "x"]
    blocks = data.pack(tok, texts, block_size=16)
    total = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in texts)  # +1: EOS between texts
    assert len(blocks) == total // 16
    flat = [t for b in blocks["input_ids"] for t in b]
    expected = [t for s in texts for t in tok(s, add_special_tokens=False).input_ids + [tok.eos_token_id]]
    assert flat == expected[: len(flat)] and all(len(b) == 16 for b in blocks["input_ids"])
    rows = data.blocks_to_rows(blocks)
    assert rows[0]["prompt_ids"] == [] and len(rows) == len(blocks)


def test_load_corpus_local_and_offline_wikitext(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("first text")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second text")
    assert data.load_corpus(tmp_path) == ["first text", "second text"]
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(OSError, match="--text_dir"):
        data.load_corpus("wikitext")
    with pytest.raises(FileNotFoundError, match="neither a local file"):
        data.load_corpus("no/such/corpus")


def test_pack_refuses_a_corpus_shorter_than_one_block(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match=r"the corpus has 6 tokens, fewer than one block of 16; "
                                         r"use a smaller --block_size or more text"):
        data.pack(tok, ["hello"], block_size=16)  # 5 characters + EOS


def test_load_corpus_reads_strict_utf8_and_names_a_bad_file(tmp_path):
    import random

    (tmp_path / "ok.txt").write_bytes("\ufeffCafé crème".encode("utf-8"))  # a BOM is dropped, accents kept
    assert data.load_corpus(tmp_path / "ok.txt") == ["Café crème"]
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text .*convert it to UTF-8"):
        data.load_corpus(latin)
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text"):  # inside a folder too
        data.load_corpus(tmp_path)
    noise = tmp_path / "noise" / "random.txt"
    noise.parent.mkdir()
    noise.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ValueError, match=r"random\.txt is not UTF-8 text"):
        data.load_corpus(noise)


def test_load_corpus_folder_without_text_files_says_which_suffixes(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match=r"holds no text files \(\.txt, \.md, \.rst, \.py\)"):
        data.load_corpus(tmp_path)


def test_self_distill_is_cached_and_resumes(tiny, tmp_path):
    model, tok = tiny
    prompts = ["abc", "hello", "what is up", "zz"]
    rows = data.self_distill_data(model, tok, prompts, max_new_tokens=6, batch_size=2, root=tmp_path, progress=False,
                                  shard_size=2)
    assert len(rows) == 4 and all(1 <= len(r["response_ids"]) <= 6 for r in rows)
    folder = data.distill_cache_dir(model, prompts, 6, tmp_path, batch_size=2)
    shards = sorted(folder.glob("shard-*.json.gz"))
    assert len(shards) == 2 and len(data.read_shards(folder)) == 4
    shards[1].unlink()  # an interrupted run: the last two answers missing
    again = data.self_distill_data(model, tok, prompts, max_new_tokens=6, batch_size=2, root=tmp_path,
                                   progress=False)
    assert again == rows
    # each answer is the model's own greedy continuation
    ids = data.chat_ids(tok, prompts[0])
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
    assert rows[0]["response_ids"] == ref[: len(rows[0]["response_ids"])]
    with pytest.raises(ValueError, match="at least one prompt"):
        data.self_distill_data(model, tok, [], root=tmp_path)


def test_draft_vocab_takes_the_most_frequent():
    rows = [{"response_ids": [5, 5, 5, 7, 7, 9]}]
    assert data.draft_vocab(rows, 2, 20).tolist() == [5, 7]
    assert data.draft_vocab(rows, 4, 20).tolist() == [0, 5, 7, 9]


def test_saved_rows_reads_every_chunk_back_in_order(tiny, tmp_path):
    model, tok = tiny
    first = data.template_rows(model, tok, 4, chunk=2, max_new_tokens=4, batch_size=2, progress=False, root=tmp_path)
    assert len(first) == 4 and len(list(tmp_path.iterdir())) == 2  # one folder per chunk
    assert sorted(map(str, data.saved_rows(tmp_path))) == sorted(map(str, first))
    rest = data.template_rows(model, tok, 4, chunk=2, max_new_tokens=4, batch_size=2, progress=False, root=tmp_path,
                              start=2)
    assert rest == first[2:]  # read back, not regenerated


def test_generate_data_script_saves_chunks_and_logs_only_new_work(tmp_path):
    """scripts/generate_data.py: gzipped answers per chunk, states beside them, one log line per chunk
    generated (none when everything is read back)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "generate_data.py"
    cmd = [sys.executable, str(script), "--model", "tiny", "--templates", "4", "--chunk", "2", "--max_new_tokens", "4",
           "--batch", "2", "--dtype", "fp32", "--out", str(tmp_path)]
    for _ in range(2):  # the second run finds everything saved
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "generation_log.jsonl").read_text().splitlines()]
    assert [r["start"] for r in log] == [0, 2] and all(r["prompts"] == 2 and r["answer_tok_s"] > 0 for r in log)
    assert len(data.saved_rows(tmp_path)) == 4 and len(list(tmp_path.glob("*/states-*.pt"))) == 2


def test_saved_rows_counts_a_prompt_once_and_keeps_to_its_model(tiny, tmp_path):
    model, tok = tiny
    for batch in (2, 4):  # the same prompts at two batch sizes: two folders
        data.self_distill_data(model, tok, ["abc", "hello"], 4, batch_size=batch, root=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2 and len(data.saved_rows(tmp_path)) == 2
    assert len(data.saved_rows(tmp_path, model)) == 2

    class Other:
        config = type("C", (), {"name_or_path": "someone/else"})()

    assert data.saved_rows(tmp_path, Other()) == []


def test_row_states_refuses_states_of_another_answer():
    import torch

    from medusa_lib.positions import row_states

    row = {"prompt_ids": [1, 2], "response_ids": [3, 4, 5], "states": torch.zeros(2, 8)}
    with pytest.raises(ValueError, match="states cover 2 tokens, its answer 3"):
        row_states([row], 64)


def test_spread_covers_every_heldout_category():
    prompts = data.load_prompts("heldout")
    cats = set(data.CATEGORIES) | set(data.HELDOUT_ONLY)
    picked = data.spread(prompts, len(cats) * 2)
    assert len(picked) == len(cats) * 2
    assert {p.category for p in picked} == cats  # the first 18 would be chat and qa only
    assert data.spread(prompts, None) == prompts and data.spread(prompts, 10_000) == prompts
    assert data.spread(range(10), 3) == [0, 3, 6]


def test_template_rows_reads_the_committed_answers_instead_of_generating(tiny, tmp_path, monkeypatch):
    """A checkout of the repository has the template answers committed: a GPU branch rehearsed at full size on a
    CPU reads them; a prompt missing there, or an answer longer than asked, means generating as before."""
    model, tok = tiny
    prompts = [p.prompt for p in data.template_prompts(3)]
    saved = data.self_distill_data(model, tok, prompts, 8, batch_size=2, root=tmp_path, progress=False)
    assert data.committed_answers(model, tok, prompts, 8, root=tmp_path) == saved
    assert data.committed_answers(model, tok, prompts, 4, root=tmp_path) is None       # cut at another length
    assert data.committed_answers(model, tok, prompts + ["unseen"], 8, root=tmp_path) is None
    assert data.committed_answers(model, tok, prompts, 8, root=tmp_path / "missing") is None
    monkeypatch.setattr(data, "COMMITTED", tmp_path)
    monkeypatch.setattr(data, "self_distill_data", lambda *a, **k: pytest.fail("generated instead of reading"))
    assert data.template_rows(model, tok, 3, max_new_tokens=8, progress=False) == saved

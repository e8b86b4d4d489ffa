import re

import pytest

from medusa_lib import data


def test_prompt_set_has_fixed_split_and_categories():
    rows = data.load_prompts()
    assert len(rows) >= 200 and {r.category for r in rows} == set(data.CATEGORIES)
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
    rows = data.self_distill_data(model, tok, prompts, max_new_tokens=6, batch_size=2, root=tmp_path, progress=False)
    assert len(rows) == 4 and all(1 <= len(r["response_ids"]) <= 6 for r in rows)
    folder = data.distill_cache_dir(model, prompts, 6, tmp_path, batch_size=2)
    shards = sorted(folder.glob("shard-*.json"))
    assert len(shards) == 2
    shards[1].unlink()  # an interrupted run: one batch missing
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


def test_spread_covers_every_heldout_category():
    prompts = data.load_prompts("heldout")
    picked = data.spread(prompts, len(data.CATEGORIES) * 2)
    assert len(picked) == len(data.CATEGORIES) * 2
    assert {p.category for p in picked} == set(data.CATEGORIES)  # the first 14 would be chat and qa only
    assert data.spread(prompts, None) == prompts and data.spread(prompts, 10_000) == prompts
    assert data.spread(range(10), 3) == [0, 3, 6]

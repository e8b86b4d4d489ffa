"""The seed's commands run end to end on the tiny model."""

import json

from medusa_lib import cli


def test_preprocess_data_offline(tmp_path):
    (tmp_path / "t.txt").write_text("some text to pack " * 50)
    out = cli.preprocess_data(["--text_dir", str(tmp_path), "--block_size", "32", "--model", "tiny",
                                    "--out", str(tmp_path / "data")])
    import datasets

    ds = datasets.load_from_disk(str(out))
    assert len(ds) > 5 and all(len(b) == 32 for b in ds["input_ids"])


def test_train_kd_then_decode_tree(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    cli.preprocess_data(["--text_dir", str(tmp_path), "--block_size", "64", "--model", "tiny",
                              "--out", str(tmp_path / "data")])
    save = tmp_path / "heads"
    rec = cli.train_kd(["--student_name", "tiny", "--offsets", "1", "2", "3", "--epochs", "1",
                             "--data", str(tmp_path / "data"), "--save_dir", str(save), "--draft_size", "0",
                             "--block_size", "64", "--max_new_tokens", "8", "--batch_size", "64"])
    assert rec["stage"] == "heads" and (save / "last" / "heads.safetensors").exists()
    assert json.loads((save / "training_record.json").read_text())["rows"] > 0
    res = cli.decode_tree(["--base_model_id", "tiny", "--mtp_ckpt_path", str(save / "last"),
                                "--max_new_tokens", "12", "--prompt", "hello", "--tree", "chain"])
    assert 1 <= res["tokens"] <= 12 and res["tau"] >= 1.0
    assert "tokens/step" in capsys.readouterr().out

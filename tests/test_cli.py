"""The seed's commands run end to end on the tiny model."""

import json
from pathlib import Path

import pytest

from medusa_lib import cli
from medusa_lib.heads import read_config


def test_preprocess_data_offline(tmp_path):
    (tmp_path / "t.txt").write_text("some text to pack " * 50)
    out = cli.preprocess_data(["--text_dir", str(tmp_path), "--block_size", "32", "--model", "tiny",
                                    "--out", str(tmp_path / "data")])
    import datasets

    ds = datasets.load_from_disk(str(out))
    assert len(ds) > 5 and all(len(b) == 32 for b in ds["input_ids"])


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_train_kd_then_decode_tree(tmp_path, capsys, kind):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    cli.preprocess_data(["--text_dir", str(tmp_path), "--block_size", "64", "--model", "tiny",
                              "--out", str(tmp_path / "data")])
    save = tmp_path / "heads"
    rec = cli.train_kd(["--student_name", "tiny", "--offsets", "1", "2", "3", "--epochs", "1",
                             "--data", str(tmp_path / "data"), "--save_dir", str(save), "--draft_size", "0",
                             "--block_size", "64", "--max_new_tokens", "8", "--batch_size", "64", "--kind", kind])
    assert rec["stage"] == "heads" and (save / "last" / "heads.safetensors").exists()
    assert read_config(save / "last" / "medusa_config.json")["kind"] == kind
    assert json.loads((save / "training_record.json").read_text())["rows"] > 0
    res = cli.decode_tree(["--base_model_id", "tiny", "--mtp_ckpt_path", str(save / "last"),
                                "--max_new_tokens", "12", "--prompt", "hello", "--tree", "chain"])
    assert 1 <= res["tokens"] <= 12 and res["tau"] >= 1.0
    assert "tokens/step" in capsys.readouterr().out


# ----------------------------------------------------------------------------- exit codes and errors (issue 15)

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

BIN = Path(sys.executable).parent  # the installed console scripts live next to the interpreter
ROOT = Path(__file__).resolve().parents[1]


def script(name, *args, cwd=None):
    """Run an installed console script; returns (exit code, stdout, stderr)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MEDUSA_SMOKE": "1"}
    p = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    return p.returncode, p.stdout, p.stderr


def test_readme_commands_run_as_written(tmp_path):
    """The README's command block, against the tiny model, exits 0 line by line (chains with && too)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- commands: .*?```bash\n(.*?)```", text, re.S).group(1)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MEDUSA_SMOKE": "1",
           "MEDUSA_CACHE": str(tmp_path / "cache")}
    for line in block.strip().splitlines():
        cmd = line.replace("embedded", "tiny").replace("--epochs 3", "--epochs 1")
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
        assert p.returncode == 0, f"{cmd}\n{p.stderr[-2000:]}"
    assert (tmp_path / "runs" / "vllm_heads" / "model.safetensors").exists()


def test_user_errors_exit_2_with_one_line(tmp_path):
    code, out, err = script("decode_tree", "--base_model_id", "tiny", "--mtp_ckpt_path", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = script("train_kd", "--student_name", "tiny", "--epochs", "0", "--save_dir", str(tmp_path / "r"))
    assert code == 2 and "epochs must be >= 1" in err


def run_cli(command, *args):
    return cli.run(command, list(args))


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--max_steps", "0"], "max_steps must be >= 1"),
    (["--batch_size", "-4"], "batch_size must be >= 1"),
    (["--block_size", "-8"], "block_size must be >= 1"),
    (["--draft_size", "-1"], "draft_size must be >= 0"),
    (["--num_layers", "0"], "num_layers must be >= 1"),
    (["--offsets", "2", "3"], "offsets must be 1..K"),
    (["--qlora"], "cannot be"),
    (["--data", "no/such/folder"], "no such folder"),
    (["--kind", "hydra", "--stage", "joint"], "trains in the heads stage"),
])
def test_train_kd_refuses_bad_arguments_before_loading(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(cli, "load_base", lambda *a, **k: pytest.fail("a model was loaded before the checks"))
    assert run_cli(cli.train_kd, "--student_name", "tiny", "--save_dir", str(tmp_path / "run"), *args) == 2
    assert message in capsys.readouterr().err


def test_train_kd_refuses_a_save_dir_with_a_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "training_record.json").write_text("{}")
    assert run_cli(cli.train_kd, "--student_name", "tiny", "--save_dir", str(tmp_path / "run")) == 2
    assert "--resume" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert run_cli(cli.train_kd, "--student_name", "tiny", "--save_dir", str(tmp_path / "file")) == 2


@pytest.mark.parametrize("args, message", [
    (["--tree", "garbage"], "JSON choices"),
    (["--tree", "-3"], "at least 1 node"),
    (["--mode", "sample", "--temperature", "-1"], "temperature must be a finite number > 0"),
    (["--mode", "sample", "--temperature", "nan"], "temperature must be a finite number > 0"),
    (["--max_new_tokens", "0"], "max_new_tokens must be"),
])
def test_decode_tree_refuses_bad_arguments_before_loading(capsys, monkeypatch, args, message):
    monkeypatch.setattr(cli, "load_base", lambda *a, **k: pytest.fail("a model was loaded before the checks"))
    assert run_cli(cli.decode_tree, "--base_model_id", "tiny", *args) == 2
    assert message in capsys.readouterr().err


def test_named_heads_never_become_other_heads(tiny, tmp_path, capsys):
    """A wrong, truncated or foreign heads path fails with the reason; nothing is trained instead."""
    from medusa_lib.heads import MedusaModel

    (tmp_path / "file").write_text("x")
    assert run_cli(cli.decode_tree, "--base_model_id", "tiny", "--mtp_ckpt_path", str(tmp_path / "file")) == 2
    assert "is a file" in capsys.readouterr().err
    MedusaModel.from_base(tiny[0], 3).save_pretrained(tmp_path / "heads")
    (tmp_path / "heads" / "medusa_config.json").write_text('{"num_heads": 3')
    assert run_cli(cli.decode_tree, "--base_model_id", "tiny", "--mtp_ckpt_path", str(tmp_path / "heads")) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert run_cli(cli.decode_tree, "--base_model_id", "tiny") == 2  # no heads fit tiny: say so
    assert "heads are for another model" in capsys.readouterr().err


def test_evaluate_out_must_be_a_folder_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_base", lambda *a, **k: pytest.fail("a model was loaded before the checks"))
    (tmp_path / "out").write_text("x")
    assert run_cli(cli.evaluate, "--model", "tiny", "--out", str(tmp_path / "out")) == 2
    assert "is a file" in capsys.readouterr().err


def test_joint_run_decodes_from_its_save_dir(tmp_path):
    """train_kd --stage joint writes best/ (heads + adapter); decode_tree on the run folder loads both."""
    save = tmp_path / "joint"
    cli.train_kd(["--student_name", "tiny", "--stage", "joint", "--max_steps", "2", "--warmup_head_steps", "1",
                  "--batch_size", "2", "--save_dir", str(save), "--max_new_tokens", "8"])
    assert (save / "best" / "adapter").is_dir() and (save / "best" / "heads.safetensors").exists()
    res = cli.decode_tree(["--base_model_id", "tiny", "--mtp_ckpt_path", str(save), "--max_new_tokens", "6"])
    assert res["tokens"] >= 1


def test_batch_size_is_positions_per_step_in_the_heads_stage(tmp_path, monkeypatch):
    seen = {}

    def fake_train_heads(mm, rows, heldout, cfg, **kw):
        seen["cfg"] = cfg
        return {"evals": []}

    monkeypatch.setattr(cli, "train_heads", fake_train_heads)
    cli.train_kd(["--student_name", "tiny", "--batch_size", "48", "--save_dir", str(tmp_path / "r"),
                  "--max_new_tokens", "4", "--n_prompts", "2"])
    assert seen["cfg"].step_size() == 48 and seen["cfg"].stage == "heads"


def test_atomic_dir_puts_the_old_folder_back_when_interrupted(tmp_path, monkeypatch):
    from medusa_lib import files

    target = tmp_path / "run"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    real = files.os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the rename of the new folder into place fails
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(files.os, "replace", real)
    assert (target / "keep.txt").read_text() == "old" and not list(tmp_path.glob("run.*"))


def test_more_refusals(tiny, tmp_path, capsys):
    from medusa_lib.heads import MedusaModel

    assert run_cli(cli.train_kd, "--student_name", "tiny", "--stage", "joint", "--resume",
                   "--save_dir", str(tmp_path / "j")) == 2
    assert "--resume continues Medusa-1" in capsys.readouterr().err
    MedusaModel.from_base(tiny[0], 2).save_pretrained(tmp_path / "run" / "best")
    assert run_cli(cli.export, "--heads", str(tmp_path / "run" / "best"), "--out", str(tmp_path / "run"),
                   "--overwrite", "--model", "tiny") == 2
    assert "holds it" in capsys.readouterr().err and (tmp_path / "run" / "best").is_dir()
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "config.json").write_text('{"model_type": "medusa"}')
    assert run_cli(cli.decode_tree, "--base_model_id", "tiny", "--mtp_ckpt_path", str(tmp_path / "vllm")) == 2
    err = capsys.readouterr().err
    assert "no 'num_heads'" in err and "Traceback" not in err
    args = cli.train_kd_parser("tiny").parse_args(["--share_lm_head"])
    assert args.share_lm_head and not cli.train_kd_parser("embedded").parse_args(["--no-share_lm_head"]).share_lm_head


def test_block_size_beyond_the_context_fails_before_self_distillation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "training_rows", lambda *a: pytest.fail("data was generated before the check"))
    save = str(tmp_path / "r")
    assert run_cli(cli.train_kd, "--student_name", "tiny", "--block_size", "1000", "--save_dir", save) == 2
    assert "above the model's context of 512" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_kind_picks_the_shipped_set(embedded, capsys, kind):
    """With no heads named, --kind picks which shipped set the decoding commands use."""
    from medusa_lib.cli import load_heads_arg

    model, tok = embedded
    assert load_heads_arg(model, tok, None, kind).kind == kind
    assert f"shipped {kind} set" in capsys.readouterr().out
    with pytest.raises(ValueError, match="kind must be one of"):
        load_heads_arg(model, tok, None, "medusa2")


@pytest.mark.parametrize("argv, msg", [
    (["decode_tree", "--mode", "typical", "--posterior_threshold", "-1"], "posterior_threshold must be a finite"),
    (["decode_tree", "--mode", "typical", "--posterior_alpha", "nan"], "posterior_alpha must be a finite"),
    (["train_kd", "--kd_weight", "nan"], "kd_weight must be a number in"),
    (["train_kd", "--kd_weight", "2"], "kd_weight must be a number in"),
    (["train_kd", "--decay", "-1"], "decay must be a number in"),
    (["train_kd", "--lr", "-1"], "lr must be a number in"),
    (["evaluate", "--humaneval", "-1"], "--humaneval must be >= 0"),
    (["evaluate", "--rounds", "0"], "--rounds must be >= 1"),
    (["preprocess_data", "--max_chars", "0"], "--max_chars must be >= 1"),
])
def test_bad_numbers_fail_before_any_work(argv, msg, tmp_path, capsys):
    """Numbers that would train garbage, accept every draft unchecked or benchmark nothing fail at once (exit 2)."""
    from medusa_lib import cli

    command, *args = argv
    if command in ("evaluate", "preprocess_data", "train_kd"):
        args += ["--out" if command != "train_kd" else "--save_dir", str(tmp_path / "out")]
    args += ["--student_name", "tiny"] if command == "train_kd" else []
    assert cli.run(getattr(cli, command), args) == 2
    assert msg in capsys.readouterr().err


def test_the_commands_default_is_the_fastest_kind_in_the_race():
    """recipes.DEFAULT_KIND (decode_tree, evaluate and demo without --kind) is the kind with the best median
    speedup over all prompts in the committed race (`make race`, assets/heads_race.json)."""

    from medusa_lib.drafters import KINDS
    from medusa_lib.evaluate import race_results
    from medusa_lib.recipes import DEFAULT_KIND

    race = race_results()
    ours = [r for r in race["summary"] if r["group"] == "all" and r["method"].split("[")[0] in KINDS]
    assert ours, "the race holds none of our drafters"
    assert DEFAULT_KIND == max(ours, key=lambda r: r["speedup"])["method"].split("[")[0]


@pytest.mark.parametrize("spec", ["[0]", "null", '"x"', "[[0.5]]", '[["a"]]', "1e3"])
def test_tree_json_of_the_wrong_type_is_a_user_error(spec, capsys):
    assert cli.run(cli.decode_tree, ["--base_model_id", "tiny", "--tree", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("decode_tree: error: ") and "Traceback" not in err and "ranks" in err


def test_a_dataset_remembers_its_tokenizer(tmp_path, capsys):
    """Blocks packed with one tokenizer never train another model's heads; --out never replaces the corpus or a
    folder of other files."""
    (tmp_path / "t.txt").write_text("some text to pack " * 50)
    data = tmp_path / "data"
    cli.preprocess_data(["--text_dir", str(tmp_path / "t.txt"), "--block_size", "32", "--model", "tiny",
                         "--out", str(data)])
    assert json.loads((data / "medusa_data.json").read_text())["vocab_size"] == 100
    args = ["--student_name", "embedded", "--data", str(data), "--save_dir", str(tmp_path / "heads"),
            "--block_size", "32", "--epochs", "1"]
    assert cli.run(cli.train_kd, args) == 2
    assert "tokenized for 'tiny' (100 tokens)" in capsys.readouterr().err
    assert not (tmp_path / "heads" / "best").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for out, msg in ((tmp_path / "other", "holds other files"), (tmp_path, "holds the corpus")):
        assert cli.run(cli.preprocess_data, ["--text_dir", str(tmp_path / "t.txt"), "--model", "tiny",
                                             "--block_size", "32", "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_failed_dataset_write_keeps_the_earlier_dataset(tmp_path, monkeypatch, capsys):
    """A full disk in the middle of preprocess_data: one line, exit 2, and the earlier dataset intact."""
    import datasets

    (tmp_path / "t.txt").write_text("some text to pack " * 50)
    argv = ["--text_dir", str(tmp_path / "t.txt"), "--block_size", "32", "--model", "tiny", "--out",
            str(tmp_path / "data")]
    cli.preprocess_data(argv)
    before = datasets.load_from_disk(str(tmp_path / "data"))["input_ids"]

    def full(self, path, *a, **k):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"trunc")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    assert cli.run(cli.preprocess_data, argv + ["--block_size", "16"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert datasets.load_from_disk(str(tmp_path / "data"))["input_ids"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "t.txt"], "a temporary folder was left behind"


def test_an_interrupted_command_says_so_and_exits_130(capsys):
    from medusa_lib.train import RunInterrupted

    def train_kd(argv):
        raise RunInterrupted("SIGTERM at step 2 (epoch 1): runs/x/last saved; run the same command with --resume")

    assert cli.run(train_kd) == 130
    err = capsys.readouterr().err
    assert err.startswith("train_kd: stopped: SIGTERM at step 2") and "--resume" in err


def test_evaluate_checks_out_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.run(cli.evaluate, ["--model", "tiny", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_more_prompts_than_there_are_is_said(capsys):
    from medusa_lib.data import load_prompts

    n = len(load_prompts("train"))
    assert len(cli.training_prompts(100000)) == n
    assert f"--n_prompts 100000: there are {n} training prompts; using them all" in capsys.readouterr().err
    assert len(cli.training_prompts(2)) == 2 and capsys.readouterr().err == ""

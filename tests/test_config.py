import pytest
import torch
import yaml

from medusa_lib import config


def test_profiles_resolve():
    for name in ["embedded", "t4", "llama2-7b-qlora", "tiny"]:
        prof = config.get_profile(name)
        assert prof.name == name and prof.backbone and prof.head.num_heads >= 1
    assert config.get_profile("llama2-7b-qlora").load_in_4bit


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown profile 'nope'.*embedded, t4, llama2-7b-qlora, tiny"):
        config.get_profile("nope")


def test_device_and_seed():
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert config.get_device().type == want
    config.set_seed(3)
    a = torch.rand(3)
    config.set_seed(3)
    assert torch.equal(a, torch.rand(3))


def test_smoke_switch_is_read_in_config_only():
    from pathlib import Path

    pkg = Path(config.__file__).parent
    readers = [p.name for p in pkg.glob("*.py") if "MEDUSA_SMOKE" in p.read_text() and p.name != "config.py"]
    assert readers == []
    assert config.smoke("full", "small") == ("small" if config.SMOKE else "full")


def test_environment_yml_agrees_with_pyproject():
    from pathlib import Path

    import tomllib

    root = Path(__file__).parents[1]
    env = yaml.safe_load((root / "environment.yml").read_text())
    py = tomllib.loads((root / "pyproject.toml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "pip" in deps and any(str(d).startswith("python") for d in deps)
    extras = set(py["project"]["optional-dependencies"])
    assert pip == [f"-e .[{','.join(sorted(extras))}]"] or pip == ["-e .[qlora,dev]"]
    assert {"qlora", "dev"} <= extras
    assert py["project"]["name"] == "medusa_lib"
    assert not any("==" in d for d in py["project"]["dependencies"]), "pyproject declares floors, not pins"


def test_cli_parsers_are_built_from_the_dataclasses():
    """Every dataclass field is a flag, and the flag's default is the profile's value."""
    import dataclasses

    from medusa_lib import cli

    for name in ("embedded", "t4", "llama2-7b-qlora", "tiny"):
        prof = config.get_profile(name)
        args = cli.train_kd_parser(name).parse_args([])
        assert config.from_arguments(config.TrainConfig, args) == prof.train
        head = config.from_arguments(config.HeadConfig, args)
        assert dataclasses.replace(head, num_heads=prof.head.num_heads) == prof.head
        assert config.from_arguments(config.DecodeConfig, cli.decode_tree_parser(name).parse_args([])) == prof.decode
    args = cli.train_kd_parser("embedded").parse_args(["--epochs", "5", "--no-share_lm_head", "--offsets", "1", "2"])
    cfg = config.from_arguments(config.TrainConfig, args)
    assert cfg.epochs == 5 and cfg.offsets == (1, 2) and not args.share_lm_head


@pytest.mark.parametrize("name", ["embedded", "t4", "llama2-7b-qlora", "tiny"])
def test_train_kd_reads_each_profiles_train_and_head_settings(name, tmp_path):
    """train_kd's defaults, through parsing and checking, are exactly the profile's TrainConfig and HeadConfig."""
    from medusa_lib import cli

    prof = config.get_profile(name)
    args = cli.parse_train_kd(["--student_name", name, "--save_dir", str(tmp_path / "run")])
    cfg, head = cli.check_train_kd(args)
    assert (cfg, head) == (prof.train, prof.head)
    assert args.qlora == prof.load_in_4bit


@pytest.mark.parametrize("name", ["t4", "llama2-7b-qlora"])
def test_load_base_reads_each_profiles_backbone_dtype_and_4bit(name, monkeypatch):
    """A hub profile reaches the loader with its backbone id, dtype ("auto": the device's) and 4-bit setting."""
    from medusa_lib import models

    class Loaded(Exception):
        pass

    def fake_hub(*args):
        raise Loaded(args)

    monkeypatch.setattr(models, "REHEARSE", False)
    monkeypatch.setattr(models, "_load_hub", fake_hub)
    prof = config.get_profile(name)
    with pytest.raises(Loaded) as got:
        models.load_base(name, device="cpu")
    backbone, dtype, device, load_in_4bit = got.value.args[0]
    want = models.pick_dtype(torch.device("cpu")) if prof.dtype == "auto" else getattr(torch, prof.dtype)
    assert (backbone, dtype, torch.device(device).type, load_in_4bit) == (prof.backbone, want, "cpu",
                                                                           prof.load_in_4bit)


def _heads_settings(mm) -> dict:
    """What a HeadConfig decides, read back from built heads (draft_size: 0 = every token may be proposed)."""
    draft = 0 if mm.draft_ids is None else len(mm.draft_ids)
    return {"num_heads": mm.num_heads, "num_layers": mm.heads.num_layers, "share_lm_head": mm.heads.share_lm_head,
            "kind": mm.heads.kind, "draft_size": draft}


def _wanted_settings(head: config.HeadConfig, vocab_size: int) -> dict:
    return {"num_heads": head.num_heads, "num_layers": head.num_layers, "share_lm_head": head.share_lm_head,
            "kind": head.kind, "draft_size": min(head.draft_size, vocab_size)}


def _tiny_rows(n=4):
    return [{"prompt_ids": [5, 6, 7], "response_ids": list(range(10 + i, 40 + i))} for i in range(n)]


@pytest.mark.parametrize("name", ["embedded", "t4", "tiny"])
def test_train_kd_builds_the_heads_its_profile_names(name, tiny, tmp_path, monkeypatch):
    """train_kd's heads have the profile's num_heads, num_layers, share_lm_head, kind and draft size.
    (The tiny backbone stands in for every profile's; training itself is cut off.)"""
    from medusa_lib import cli, models

    class Built(Exception):
        pass

    def fake_fit(mm, *args, **kwargs):
        raise Built(mm)

    def tiny_base(*args, **kwargs):
        model, tok = models.load_base("tiny", device="cpu")
        model.config.max_position_embeddings = 4096  # the t4 profile's block_size passes the check
        return model, tok

    monkeypatch.setattr(cli, "load_base", tiny_base)
    monkeypatch.setattr(cli, "training_rows", lambda *a, **k: _tiny_rows())
    monkeypatch.setattr(cli, "heldout_rows", lambda *a, **k: [])
    monkeypatch.setattr(cli, "fit", fake_fit)
    with pytest.raises(Built) as got:
        cli.train_kd(["--student_name", name, "--save_dir", str(tmp_path / "run")])
    mm = got.value.args[0]
    assert _heads_settings(mm) == _wanted_settings(config.get_profile(name).head, mm.config.vocab_size)


def test_fresh_heads_builds_the_heads_its_profile_names(tiny):
    """recipes.fresh_heads (the shipped heads' recipe, make heads, quick_heads) builds what a profile names:
    head count, layers, shared or own lm_head, draft vocabulary and kind; with no profile given, the model's own."""
    from medusa_lib.recipes import fresh_heads, profile_of

    model, _ = tiny
    for name in ("embedded", "t4", "llama2-7b-qlora", "tiny"):
        prof = config.get_profile(name)
        mm, _ = fresh_heads(model, _tiny_rows(), epochs=1, progress=False, head=prof.head)
        assert _heads_settings(mm) == _wanted_settings(prof.head, mm.config.vocab_size), name
    assert profile_of(model).name == "tiny"
    mm, _ = fresh_heads(model, _tiny_rows(), epochs=1, progress=False)  # the tiny profile's own heads
    assert _heads_settings(mm) == _wanted_settings(config.get_profile("tiny").head, mm.config.vocab_size)


def test_a_4bit_profile_trains_qlora_joint_with_its_own_batch_and_lr():
    from medusa_lib import cli

    args = cli.parse_train_kd(["--student_name", "llama2-7b-qlora"])
    prof = config.get_profile("llama2-7b-qlora")
    assert args.qlora and args.stage == "joint"
    assert (args.batch_size, args.lr, args.grad_accum, args.block_size) == (
        prof.train.batch_size, prof.train.lr, prof.train.grad_accum, prof.train.block_size)


@pytest.mark.parametrize("value,want", [("1", True), ("yes", True), ("on", True), ("", False), ("0", False),
                                        ("off", False), ("No", False)])
def test_env_flags_read_yes_and_no(monkeypatch, value, want):
    monkeypatch.setenv("MEDUSA_X", value)
    assert config.env_flag("MEDUSA_X") is want


def test_env_flag_rejects_anything_else(monkeypatch):
    monkeypatch.setenv("MEDUSA_X", "banana")  # once read as "on"
    with pytest.raises(ValueError, match="MEDUSA_X='banana' is neither yes nor no"):
        config.env_flag("MEDUSA_X")


def test_gpu_branch_is_cuda_or_a_rehearsal(monkeypatch):
    monkeypatch.setattr(config, "REHEARSE", False)
    assert config.on_gpu(torch.device("cuda")) and not config.on_gpu(torch.device("cpu"))
    monkeypatch.setattr(config, "REHEARSE", True)
    assert config.on_gpu(torch.device("cpu"))


def test_profile_from_the_environment_wins(monkeypatch):
    monkeypatch.delenv("MEDUSA_PROFILE", raising=False)
    assert config.chosen_profile("embedded") == "embedded"
    monkeypatch.setenv("MEDUSA_PROFILE", "t4")
    assert config.chosen_profile("embedded") == "t4"
    monkeypatch.setenv("MEDUSA_PROFILE", "t5")
    with pytest.raises(ValueError, match="unknown profile 't5'"):
        config.chosen_profile("embedded")


def test_profile_of_knows_each_backbone_and_its_rehearsal_copy():
    """quick heads on a rehearsed t4 must be the t4 profile's heads, as on a real T4, or the rehearsal misses them."""
    from types import SimpleNamespace

    from medusa_lib.recipes import profile_of

    def named(name):
        return SimpleNamespace(config=SimpleNamespace(name_or_path=name), decoder=None, lm_head=None)

    cases = {"HuggingFaceTB/SmolLM2-135M-Instruct": "embedded", "tiny": "tiny",
             "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "t4", "/cache/rehearse-TinyLlama-1.1B-Chat-v1.0-1layers-v1": "t4",
             "/cache/rehearse-Llama-2-7b-chat-hf-1layers-v1": "llama2-7b-qlora", "someone/else": "embedded"}
    assert {n: profile_of(named(n)).name for n in cases} == cases

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


def test_every_profile_field_is_read():
    """No setting that nothing reads: each Profile / config field name appears in the library's code."""
    import dataclasses
    from pathlib import Path

    import medusa_lib

    root = Path(medusa_lib.__file__).parent
    sources = [p for p in root.glob("*.py") if p.name != "config.py"] + list(root.parent.glob("notebooks/*.ipynb"))
    code = "\n".join(p.read_text() for p in sources) + config.TrainConfig.step_size.__code__.co_names.__repr__()
    for cls in (config.Profile, config.HeadConfig, config.TrainConfig, config.DecodeConfig):
        for f in dataclasses.fields(cls):
            assert f".{f.name}" in code or f"'{f.name}'" in code, f"{cls.__name__}.{f.name} is never read"


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

"""scripts/gpu_check.py: the record lands in a created folder, holds every version and every part's status, and
one part that raises (or cannot run here) never stops the others. Sizes shrink under MEDUSA_SMOKE=1."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_out_folder_is_created_and_the_record_has_versions_and_every_part(tmp_path):
    out = tmp_path / "missing" / "nested"
    env = {**os.environ, "MEDUSA_SMOKE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--parts", "verify_cost,big7b",
                           "--wheels", "off", "--budget", "200"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [path] = out.glob("gpu_check-*.json")
    record = json.loads(path.read_text())
    for name in ("torch", "transformers", "huggingface_hub", "peft", "accelerate", "python"):
        assert name in record["versions"]
    assert record["packages"]["torch"] and record["card"] and record["date"]
    assert record["parts"]["verify_cost"]["status"] == "ok"
    assert record["parts"]["verify_cost"]["rows"][0]["costs"]["1"] == 1.0
    assert "upper bound" in record["parts"]["verify_cost"]["upper_bound_note"]
    assert record["parts"]["big7b"]["status"] == "skipped" and "CUDA" in record["parts"]["big7b"]["reason"]
    assert set(record["not_selected"]) == {"tests", "e2e", "qlora"}
    assert all("seconds" in p for p in record["parts"].values())


def test_a_part_that_raises_is_recorded_and_the_others_still_run(gc, tmp_path):
    def boom(ctx):
        raise RuntimeError("CUDA out of memory (simulated)")

    def skip(ctx):
        raise gc.SkipPart("bitsandbytes does not import here")

    parts = {"boom": boom, "skip": skip, "fine": lambda ctx: {"value": 1}}
    args = gc.parse(["--cpu", "--out", str(tmp_path / "a" / "b")])
    record, path = gc.run_all(args, {"note": "test"}, isolate=False, parts=parts)
    assert record["parts"]["boom"]["status"] == "error" and "simulated" in record["parts"]["boom"]["error"]
    assert record["parts"]["skip"] == {"status": "skipped", "reason": "bitsandbytes does not import here",
                                       "seconds": record["parts"]["skip"]["seconds"]}
    assert record["parts"]["fine"]["status"] == "ok" and record["parts"]["fine"]["value"] == 1
    assert json.loads(path.read_text())["parts"]["fine"]["value"] == 1  # what is on disk is the whole record


def test_only_differing_wheels_are_installed(gc):
    torch_version = gc.dist_version("torch")
    manifest = {"packages": [{"name": "torch", "version": torch_version, "role": "pinned", "file": "t.whl"},
                             {"name": "peft", "version": "0.0.1", "role": "pinned", "file": "p.whl"},
                             {"name": "torch", "version": "0", "role": "dep", "requires": ">=1", "file": "d.whl"},
                             {"name": "surely-not-installed-here", "version": "1", "role": "dep", "requires": "",
                              "file": "m.whl"}],
                "bitsandbytes": {"skipped": "too big"}}
    files = [e["file"] for e in gc.wheels_to_install(manifest)]
    assert files == ["p.whl", "m.whl"]
    assert len(gc.wheels_to_install(manifest, force=True)) == 4

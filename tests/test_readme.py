"""The README's measured figures are the records' figures: each typed number is read back from the file it cites."""

import json
import re
from pathlib import Path

import pytest

from medusa_lib.evaluate import learning_curve
from medusa_lib.heads import SHIPPED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def record(kind: str) -> dict:
    return json.loads((SHIPPED[kind] / "training_record.json").read_text())


def readme_row(label: str) -> list[float]:
    """The numbers of the README table row that starts with `label`."""
    line = next(ln for ln in README.splitlines() if ln.startswith(f"| {label} |"))
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


@pytest.mark.parametrize("kind,label", [("medusa", "Medusa"), ("hydra", "Hydra")])
def test_the_heads_table_is_the_shipped_records(kind, label):
    rec = record(kind)
    suffix = ", along the true path" if kind == "hydra" else ""
    assert readme_row(f"{label} top-1{suffix}") == [round(a, 2) for a in rec["head_accuracy"]]
    assert readme_row(f"{label} top-5{suffix}") == [round(a, 2) for a in rec["head_accuracy_top5"]]


def test_the_heads_tau_and_positions_are_the_shipped_records():
    medusa, hydra = record("medusa"), record("hydra")
    assert f"τ on {medusa['tau_prompts']} held-out prompts" in README
    assert f"Medusa {medusa['tau']:.2f}, Hydra {hydra['tau']:.2f}" in README
    assert f"the same {medusa['positions']:,} positions" in README and medusa["positions"] == hydra["positions"]


def test_the_learning_curve_table_is_the_shipped_curve():
    shipped = (ROOT / "docs" / "learning_curve.md").read_text().strip().splitlines()
    assert all(line in README for line in shipped)
    assert len(shipped) == len(learning_curve()) + 2  # header, rule, one row per point


def test_the_gains_from_991k_to_2m_are_the_curves():
    points = {(p.get("kind", "medusa"), p["positions"]): p for p in learning_curve()}
    gain = {kind: [b - a for a, b in zip(points[(kind, 991249)]["top1"], points[(kind, 2037837)]["top1"])]
            for kind in ("medusa", "hydra")}
    text = (f"head-1 top-1 rose by {gain['medusa'][0]:.3f} (Medusa) and {gain['hydra'][0]:.3f}\n(Hydra), heads 2 "
            f"and 3 by {gain['medusa'][1]:.3f} and {gain['medusa'][2]:.3f} (Medusa) and {gain['hydra'][1]:.3f} and "
            f"{gain['hydra'][2]:.3f} (Hydra)")
    assert text in README


def report_table(paths: dict) -> str:
    """`scripts/eagle_report.py --table`'s markdown of the reports {row name: report path}."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eagle_report", ROOT / "scripts" / "eagle_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report.table([f"{name}={path}" for name, path in paths.items()])


def test_the_training_time_test_table_is_the_reports_table():
    names = {"301K drafter (EAGLE-1, 6 epochs)": "shipped", "control (+2 epochs, no unroll)": "control",
             "training-time test (+2 epochs, unroll 3)": "ttt"}
    made = report_table({name: ROOT / 'docs' / 'eagle_ttt' / f'{stem}.json' for name, stem in names.items()})
    assert (ROOT / "docs" / "eagle_ttt.md").read_text() == made
    assert all(line in README for line in made.strip().splitlines())


def test_what_the_readme_says_of_the_training_time_test_holds():
    r = {stem: json.loads((ROOT / "docs" / "eagle_ttt" / f"{stem}.json").read_text()) for stem in ("control", "ttt")}
    acc = {stem: rep["heldout_accuracy"] for stem, rep in r.items()}
    for key in ("top1_depth2", "top1_depth3"):  # "lifts depths 2 and 3 well above the control's"
        assert acc["ttt"][key] > acc["control"][key] + 0.03
    assert abs(acc["ttt"]["top1"] - acc["control"]["top1"]) < 0.02  # "leaves depth 1 about where it was"
    assert abs(r["ttt"]["tau"] - r["control"]["tau"]) < 0.05  # "τ hardly moves"
    assert abs(r["ttt"]["accepted_at_least"]["1"] - r["control"]["accepted_at_least"]["1"]) < 0.02


def test_the_more_data_table_is_the_reports_table_and_its_claims_hold():
    paths = {"301K positions, 6 epochs": ROOT / "docs" / "eagle_ttt" / "shipped.json",
             "508K positions, 6 epochs": ROOT / "docs" / "eagle_500k" / "report_3_4_10.json"}
    made = report_table(paths)
    assert (ROOT / "docs" / "eagle_data.md").read_text() == made
    assert all(line in README for line in made.strip().splitlines())
    old, new = (json.loads(path.read_text()) for path in paths.values())
    gain = new["heldout_accuracy"]["top1"] - old["heldout_accuracy"]["top1"]
    assert f"Depth-1 top-1 rose by {gain:.3f} and τ by {new['tau'] - old['tau']:.2f}" in README
    assert new["accepted_at_least"]["1"] > old["accepted_at_least"]["1"]  # "accepted in more steps"
    assert f"break-even τ {new['break_even_tau']:.2f} against τ {new['tau']:.2f}" in README
    assert new["break_even_tau"] > new["tau"]  # "a step still costs more than the τ it buys"
    hydra = max((p for p in learning_curve() if p.get("kind") == "hydra"), key=lambda p: p["positions"])
    eagle = next(p for p in learning_curve() if p.get("kind") == "eagle" and p["positions"] == 508303)
    assert eagle["top1"][0] > hydra["top1"][0]  # "above the Hydra heads' head 1 at 2.04M"

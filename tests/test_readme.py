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

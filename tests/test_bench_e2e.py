"""tools/bench/train_e2e.py runs all three sides on a small demo dataset and reports what its docs say."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_train_e2e_runs_every_side(tmp_path):
    pytest.importorskip("torchrec")
    out = tmp_path / "e2e.json"
    cmd = [sys.executable, str(ROOT / "tools/bench/train_e2e.py"), "--rows", "3000", "--test-rows", "1000",
           "--rounds", "1", "--data", str(tmp_path / "data"), "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("recis vs TorchRec end to end: ") and last.endswith("x samples/s"), last
    summary = json.loads(out.read_text())
    assert summary["environment"]["command"].startswith("train_e2e.py --rows 3000")
    sides = summary["rounds"][0]
    assert set(sides) == {"recis", "torchrec", "torch"}
    for name, side in sides.items():
        assert side["samples"] == 3000, name  # one epoch: every training row, once
        assert 0.0 < side["auc"] < 1.0 and side["peak_gb"] > 0.05, (name, side)
    ratio = sides["recis"]["samples_per_s"] / sides["torchrec"]["samples_per_s"]
    assert summary["recis_vs_torchrec"] == pytest.approx(ratio)


def test_train_e2e_refuses_unknown_sides_before_writing_data(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools/bench/train_e2e.py"), "--modes", "recis,tensorflow",
           "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "unknown modes ['tensorflow']" in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "data").exists()

"""The benchmark scripts keep running (smoke runs; no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("script", "expect"), [
    ("bench_tabular_ig.py", "max |diff| vs Captum"),
    ("bench_shapley.py", "kernel auto"),
    ("bench_image_ig.py", "median photo: adaptive"),
    ("bench_audit_log.py", "inclusion proof, median"),
    ("bench_counterfactuals.py", "DiCE genetic"),
    ("bench_service.py", "acknowledged"),
    ("bench_anchors.py", "with anchors and alerts"),
    ("bench_quality.py", "largest difference between the curves"),
    ("bench_console.py", "ms target"),
    ("bench_formats.py", "explain ratio"),
    ("bench_batch.py", "overhead per task"),
    ("bench_deploy.py", "PostgreSQL, 2 API workers"),
])
def test_benchmark_runs_quick(script, expect):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert expect in out.stdout

"""The README's run command: the example pipeline end to end in real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_demo_runs_the_order_pipeline_to_completion(redis_url: str, tmp_path: Path) -> None:
    result = _run_demo(redis_url, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"demo: using Redis at {redis_url}" in out  # the session's own, not a default
    assert "3/3 tasks completed, 0 failed" in out
    # charge-payment fails once and succeeds on its retry
    charge = next(line for line in out.splitlines() if line.startswith("charge-payment"))
    assert "completed" in charge and "'attempt': 2" in charge
    assert "run data tagged charged or shipped: ['payment', 'shipment']" in out
    assert "prefix 'customer-' and tag v1.0: ['customer-c-42']" in out


def _run_demo(redis_url: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "FOREMAN_REDIS_URL": redis_url,
            "FOREMAN_DEMO_DIR": str(home / "demo"),
            "HOME": str(home),
        },
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )

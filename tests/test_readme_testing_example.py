"""The README's "Testing your handlers" example is a test file: run it as one, with pytest
in a fresh process, so the ``foreman`` fixture comes from the installed plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Testing your handlers"


def readme_example() -> str:
    """The first Python block of the README's section (the only copy of the example)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"no python block under {SECTION!r}"
    return found.group(1)


def test_the_readme_example_passes(tmp_path: Path) -> None:
    example = tmp_path / "test_orders.py"
    example.write_text(readme_example())
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTEST_ADDOPTS="")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(example), "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout[-2000:]

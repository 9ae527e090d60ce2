"""docs/reliability.md lists exactly the reliability suite's cases and rules
(tests/reliability/report.py --check), so the page cannot drift from the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reliability_page_matches_the_suite() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "reliability" / "report.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

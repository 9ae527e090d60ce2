"""compare_proposals.py's pieces that need no training: its table, and that a step whose output
exists is not run again."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "compare_proposals.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_proposals", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_proposals"] = module
    spec.loader.exec_module(module)
    return module


def result(ar: float, ap: float) -> dict[str, float]:
    keys = ("AR@100", "AR@1000", "ARs@1000", "ARm@1000", "R@1000@0.50", "R@1000@0.70")
    return {**dict.fromkeys(keys, ar), "R@1000@0.90": ar / 2, "AP": ap, "AP50": 90.0, "AP75": 80.0}


def test_the_table_has_a_row_per_seed_and_method_and_the_speed_ratio(compare) -> None:
    by_seed = {
        2015: {"selective search": result(70.0, 76.5), "RPN": result(60.0, 75.25)},
        7: {"selective search": result(71.0, 77.0), "RPN": result(61.0, 76.0)},
    }
    speed = {
        "selective search": {"images/s": 5.0, "proposals/s": 1500.0, "proposals/image": 300.0},
        "RPN": {"images/s": 80.0, "proposals/s": 32000.0, "proposals/image": 400.0},
    }
    lines = compare.markdown_table(by_seed, speed).splitlines()
    assert lines[2] == (
        "| selective search | 2015 | 70.00 | 70.00 | 70.00 | 70.00 | 70.00 | 70.00 | 35.00 "
        "| 76.50 | 90.00 | 80.00 |"
    )
    assert lines[5].startswith("| RPN | 7 | 61.00 |") and lines[5].endswith(
        "| 76.00 | 90.00 | 80.00 |"
    )
    assert "| RPN | 400 | 80.0 | 32000 | 12.5 ms |" in lines
    assert lines[-1] == "The RPN takes 0.062x selective search's time per image (16.0x faster)."


def test_a_step_whose_output_exists_is_not_run(compare, tmp_path: Path) -> None:
    done = tmp_path / "model_final.pth"
    done.write_text("")
    compare.run_once(done, ["-c", "raise SystemExit(1)"])  # would fail if it ran
    with pytest.raises(SystemExit, match="failed"):
        compare.run_once(tmp_path / "missing", ["-c", "raise SystemExit(1)"])

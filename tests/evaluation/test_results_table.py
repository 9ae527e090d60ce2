"""format_results_table: the text table printed after an evaluation."""

from __future__ import annotations

import math

from detkit.evaluation import format_results_table


def test_summary_row_and_per_class_rows_are_aligned() -> None:
    results = {
        "bbox": {"AP": 50.0, "AP50": 75.123, "AP-cat": 10.0, "AP-hot-dog": math.nan},
        "other": {"AP": 1},
    }
    expected = """\
bbox:
|    AP |  AP50 |
|-------|-------|
| 50.00 | 75.12 |

| class   |    AP |
|---------|-------|
| cat     | 10.00 |
| hot-dog |   nan |

other:
|   AP |
|------|
| 1.00 |"""
    assert format_results_table(results) == expected


def test_several_per_class_metrics_share_one_row_per_class() -> None:
    table = format_results_table({"bbox": {"AP50-a": 1.0, "AP75-a": 2.0, "AP50-b": 3.0}})
    assert table.splitlines()[1:] == [
        "| class | AP50 | AP75 |",
        "|-------|------|------|",
        "| a     | 1.00 | 2.00 |",
        "| b     | 3.00 |  nan |",
    ]


def test_no_results() -> None:
    assert format_results_table({}) == "(no results)"

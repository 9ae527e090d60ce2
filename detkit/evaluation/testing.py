"""Rendering evaluation results for people: the table printed at the end of an evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping


def format_results_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """``{task: {metric: value}}`` as aligned text tables, one block per task.

    Summary metrics (``AP``, ``AP50``, …) form one row; per-class metrics named
    ``<metric>-<class>`` (``AP-car``, ``AP50-car``) form a second table, one row per class.
    """
    if not results:
        return "(no results)"
    blocks = []
    for task, metrics in results.items():
        summary = {name: value for name, value in metrics.items() if "-" not in name}
        per_class: dict[str, dict[str, float]] = {}
        for name, value in metrics.items():
            if "-" in name:
                metric, class_name = name.split("-", 1)
                per_class.setdefault(class_name, {})[metric] = value
        lines = [f"{task}:"]
        if summary:
            lines += _grid(list(summary), [[_format(v) for v in summary.values()]])
        if per_class:
            columns = list(dict.fromkeys(m for row in per_class.values() for m in row))
            rows = [
                [class_name, *(_format(row.get(m, math.nan)) for m in columns)]
                for class_name, row in per_class.items()
            ]
            if summary:
                lines.append("")
            lines += _grid(["class", *columns], rows, text_columns=1)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _format(value: object) -> str:
    if value is None:  # an AP that could not be measured, as saved in strict JSON
        return "nan"
    return f"{value:.2f}" if isinstance(value, float | int) else str(value)


def _grid(header: list[str], rows: list[list[str]], text_columns: int = 0) -> list[str]:
    """Lines of a ``|``-separated table whose columns are as wide as their widest cell; the
    first ``text_columns`` columns are aligned left, the (numeric) others right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        aligned = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(aligned) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]

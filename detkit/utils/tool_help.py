"""What a tool's ``--help`` says about it: the first paragraph of its module docstring."""

from __future__ import annotations


def tool_description(doc: str | None) -> str:
    """The first paragraph of a tool's docstring ``doc`` as one line, RST's double backquotes
    dropped: every sentence of it whole, where the first line alone would cut one that wraps."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(paragraph.replace("``", "").split())

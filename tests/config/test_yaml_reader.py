"""detkit.config.yaml_reader: the one reader of a user's YAML, against PyYAML's safe loader."""

from __future__ import annotations

import pytest
import yaml

from detkit.config import ConfigError
from detkit.config.yaml_reader import read_yaml


def test_reads_what_the_safe_loader_reads() -> None:
    text = "A: [1, -2, 0x10, 1.5, .inf, 1_000, 1.0e-3, yes, null, text]\nB: {C: 'q'}\n"
    assert read_yaml(text, "f.yaml") == yaml.safe_load(text)


def test_anchors_are_allowed_but_any_alias_is_refused() -> None:
    assert read_yaml("A: &x 1\nB: 2\n", "f.yaml") == {"A": 1, "B": 2}
    with pytest.raises(ConfigError, match=r"^f\.yaml:2: the alias \*x is refused"):
        read_yaml("A: &x 1\nB: *x\n", "f.yaml")


def test_base_60_numbers_are_text() -> None:
    assert yaml.safe_load("[20:30, 1:30.5]") == [1230, 90.5]  # what plain YAML 1.1 does
    assert read_yaml("[20:30, 1:30.5]", "f.yaml") == ["20:30", "1:30.5"]


def test_errors_are_one_line_with_the_place() -> None:
    with pytest.raises(ConfigError) as error:
        read_yaml("A: 1\nB: [2\n", "f.yaml")
    assert str(error.value).startswith("f.yaml:3:1: not valid YAML: while parsing a flow")
    assert "\n" not in str(error.value)


def test_an_override_is_named_without_lines() -> None:
    with pytest.raises(ConfigError) as error:
        read_yaml("{A: 1, A: 2}", "override 'X={A: 1, A: 2}'", lines=False)
    assert str(error.value).startswith("override 'X={A: 1, A: 2}': 'A' is given twice")


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml("[" * 5000 + "]" * 5000, "f.yaml")

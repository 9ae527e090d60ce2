"""docs/configs.md's table of keys is the one generated from the typed defaults, every key has a
meaning, and the generator writes the table a hand-written example expects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detkit.config import add_config, get_default_config
from detkit.config.defaults import DetkitConfig, key, section
from detkit.config.reference import (
    generated_part,
    key_references,
    main,
    markdown_reference,
)

CONFIGS_MD = Path(__file__).resolve().parents[2] / "docs" / "configs.md"
REGENERATE = ".venv/bin/python -m detkit.config.reference --write docs/configs.md"


def test_configs_md_holds_the_table_generated_from_the_defaults() -> None:
    documented = generated_part(CONFIGS_MD.read_text(), str(CONFIGS_MD))
    assert documented == markdown_reference(DetkitConfig), (
        f"docs/configs.md's table of keys differs from detkit/config/defaults.py; edit the "
        f"meanings there and regenerate the table: {REGENERATE}"
    )


def test_every_default_key_has_a_meaning() -> None:
    references = key_references(get_default_config())
    assert {"MODEL.ROI_HEADS.IOU_LABELS", "SOLVER.CLIP_GRADIENTS.NORM_TYPE", "SEED"} <= {
        r.name for r in references
    }
    assert [r.name for r in references if not r.meaning.strip()] == []


@dataclass
class Sampling:
    RATIO: float = key(0.25, "a | in a meaning is escaped")
    NAMES: list[str] = key(["a", "b c", "true", ""], "strings YAML would misread are quoted")
    LEVELS: list[int] = key([], "an empty list")


@dataclass
class TinyKeys:
    NAME: str = key("", "an empty string")
    LIMIT: float | None = key(None, "none\n  yet")
    ON: bool = key(True, "a flag")
    UNDOCUMENTED: int = 3
    SAMPLING: Sampling = section(Sampling)


TINY_TABLE = """\
| key | default | meaning |
|---|---|---|
| `NAME` | `""` | an empty string |
| `LIMIT` | `null` | none yet |
| `ON` | `true` | a flag |
| `UNDOCUMENTED` | `3` |  |
| `SAMPLING.RATIO` | `0.25` | a \\| in a meaning is escaped |
| `SAMPLING.NAMES` | `[a, b c, "true", ""]` | strings YAML would misread are quoted |
| `SAMPLING.LEVELS` | `[]` | an empty list |
"""


def test_the_table_of_a_dataclass_is_written_as_expected() -> None:
    assert markdown_reference(TinyKeys) == TINY_TABLE
    assert markdown_reference(TinyKeys(ON=False)).splitlines()[4] == "| `ON` | `false` | a flag |"


@dataclass
class ProjectKeys:
    TINY: TinyKeys = section(TinyKeys)


def test_a_structured_config_gives_the_same_table_and_a_project_its_own_keys() -> None:
    assert markdown_reference(OmegaConf.structured(TinyKeys)) == TINY_TABLE
    merged = key_references(add_config(get_default_config(), ProjectKeys))
    assert [r.name for r in merged][-7:] == [f"TINY.{r.name}" for r in key_references(TinyKeys)]
    assert merged[-1].meaning == "an empty list"


def test_check_fails_on_a_stale_table_in_one_line_and_write_regenerates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "keys.md"
    begin = "<!-- BEGIN GENERATED: config reference, from TinyKeys -->"
    page.write_text(f"# Keys\n\n{begin}\n| old | table |\n<!-- END GENERATED -->\nafter\n")
    defaults = ["--defaults", f"{__name__}:TinyKeys"]
    assert main(["--check", str(page), *defaults]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and str(page) in message
    assert f"python -m detkit.config.reference --write {page}" in message
    assert main(["--write", str(page), *defaults]) == 0
    assert page.read_text() == f"# Keys\n\n{begin}\n{TINY_TABLE}<!-- END GENERATED -->\nafter\n"
    assert main(["--check", str(page), *defaults]) == 0


def test_a_page_without_the_marker_lines_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "keys.md"
    page.write_text("# Keys\n")
    assert main(["--check", str(page)]) == 2
    assert str(page) in capsys.readouterr().err

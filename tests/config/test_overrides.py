"""The one command-line grammar of config overrides (``detkit.config.overrides``): ``KEY=VALUE``
or detectron2's ``KEY VALUE`` pairs after the options, beginning at the first such word."""

from __future__ import annotations

import pytest

from detkit.config import ConfigError, get_default_config, parse_overrides, split_overrides

SECTIONS = set(get_default_config())


def test_the_overrides_begin_at_the_first_override_or_config_key() -> None:
    words = ["--input", "a.jpg", "photos", "MODEL.WEIGHTS", "w.pth", "SEED=3", "OUTPUT_DIR", "o"]
    assert split_overrides(words, SECTIONS) == (
        ["--input", "a.jpg", "photos"],
        ["MODEL.WEIGHTS=w.pth", "SEED=3", "OUTPUT_DIR=o"],
    )
    assert split_overrides(["--depth", "1"], SECTIONS) == (["--depth", "1"], [])


def test_words_that_only_look_like_keys_stay_options(tmp_path, monkeypatch) -> None:
    """A capitalised file name that is no config section, and an existing file named like one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MODEL").write_text("")
    words = ["--input", "IMG_01.JPG", "MODEL", "SEED=3"]
    assert split_overrides(words, SECTIONS) == (["--input", "IMG_01.JPG", "MODEL"], ["SEED=3"])


@pytest.mark.parametrize(
    "words, message",
    [
        (["SEED=3", "--output", "o"], "option --output must come before the KEY=VALUE config"),
        (["MODEL.WEIGHTS", "w.pth", "SEED"], "override 'SEED' has no value; write KEY=VALUE"),
    ],
)
def test_what_cannot_follow_the_overrides(words: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_overrides(["--depth", "1", *words], SECTIONS)


def test_parse_overrides_is_idempotent() -> None:
    """The tools parse once and pass the result on; parsing it again changes nothing."""
    parsed = parse_overrides(["SOLVER.MAX_ITER", "6", "--", "solver.base_lr=0.1"])
    assert parsed == ["SOLVER.MAX_ITER=6", "solver.base_lr=0.1"]
    assert parse_overrides(parsed) == parsed

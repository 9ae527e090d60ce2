"""detkit.config.interpolation: ${oc.env:VAR} replaced as a config is read, nothing else read."""

from __future__ import annotations

import pytest

from detkit.config import ConfigError, dump_config, load_config
from detkit.config.interpolation import resolve_interpolations

WHERE = "c.yaml: KEY"


def test_variables_and_defaults(monkeypatch) -> None:
    monkeypatch.setenv("DETKIT_TEST_A", "a")
    monkeypatch.delenv("DETKIT_TEST_UNSET", raising=False)
    value = {
        "K": ["${oc.env:DETKIT_TEST_A}/x/${oc.env:DETKIT_TEST_A}", 3],
        "D": "${oc.env:DETKIT_TEST_UNSET,fallback}",
        "N": "${oc.env:DETKIT_TEST_UNSET,null}",
    }
    assert resolve_interpolations(value, WHERE) == {"K": ["a/x/a", 3], "D": "fallback", "N": None}


@pytest.mark.parametrize(
    "text",
    ["${OTHER.KEY}", "${oc.decode:'[1]'}", "${oc.env:${oc.env:A}}", "\\${oc.env:HOME}", "${x"],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml: KEY: .*only \$\{oc\.env:VAR\}"):
        resolve_interpolations(text, WHERE)


def test_a_value_that_would_be_read_again_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("DETKIT_TEST_A", "${oc.env:HOME}")
    with pytest.raises(ConfigError, match=r"gives '\$\{oc\.env:HOME\}', which holds"):
        resolve_interpolations("${oc.env:DETKIT_TEST_A}", WHERE)


def test_a_loaded_config_holds_values_and_dumps_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DETKIT_TEST_STEPS_OUT", str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text("OUTPUT_DIR: ${oc.env:DETKIT_TEST_STEPS_OUT}/run\n")
    cfg = load_config(config, ["DATASETS.TRAIN=['${oc.env:DETKIT_TEST_STEPS_OUT,x}']"])
    output_dir, train = cfg.OUTPUT_DIR, list(cfg.DATASETS.TRAIN)
    assert output_dir == str(tmp_path / "run") and train == [str(tmp_path)]
    dumped = dump_config(cfg)
    assert "${" not in dumped and f"OUTPUT_DIR: {tmp_path}/run" in dumped

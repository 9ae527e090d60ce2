"""The set-up every tool shares (``detkit.engine.tool_setup``): one grammar of config overrides,
an option placed after an override answered by every tool with the same one line, and user
errors as one line with exit status 2 (their traceback with ``--debug``). Each case runs the
tool as a user does, in its own process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from test_help import TOOLS, parser_of

from detkit.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes" / "fast_rcnn.yaml"
# Each tool that reads a config, with options it needs (the required ones included) to place
# after an override.
OPTIONS_AFTER = {
    "analyze_model.py": ["--depth", "1"],
    "benchmark.py": ["--repeat", "1"],
    "compress_fc.py": ["--ranks", "fc6=1", "--output", "out.pth"],
    "compute_proposals.py": ["--dataset", "shapes_val", "--out", "proposals.pkl"],
    "demo.py": ["--input", "a.png", "--output", "demo"],
    "export_model.py": ["--output", "model.pt2"],
    "prepare_data.py": ["--sets", "train"],
    "train_net.py": ["--num-gpus", "2"],
    "visualize_data.py": ["--source", "annotation", "--output", "pictures"],
    "visualize_json_results.py": ["--input", "results.json", "--output", "pictures"],
}


def run(tool: str, *args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``tools/<tool>`` with ``args``, run from ``cwd`` to completion."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *map(str, args)],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tool_that_reads_a_config_is_covered() -> None:
    readers = {
        script.name
        for script in TOOLS
        if "--config-file" in parser_of(script)._option_string_actions
    }
    assert readers == set(OPTIONS_AFTER)


@pytest.mark.parametrize("tool, options", OPTIONS_AFTER.items(), ids=list(OPTIONS_AFTER))
def test_an_option_after_an_override_is_one_line(tool: str, options: list[str], tmp_path) -> None:
    """Not argparse's "the following arguments are required: --ranks, --output", which were
    given, after the override."""
    result = run(tool, "--config-file", SHAPES, "MODEL.WEIGHTS=w.pth", *options, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    name = Path(tool).stem
    expected = f"{name}: option {options[0]} must come before the KEY=VALUE config overrides"
    assert result.stderr.strip() == expected
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_option_of_several_values_ends_where_the_overrides_begin(tmp_path) -> None:
    """``--tasks parameter MODEL.…=32``: the override is not taken for a task."""
    result = run(
        "analyze_model.py", "--config-file", SHAPES, "--tasks", "parameter",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.SMALL_CONVNET.CHANNELS=[8, 8]", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "box_head.fc6" in result.stdout and "FLOPs" not in result.stdout


def test_a_user_error_is_one_line_and_its_traceback_on_request(tmp_path, monkeypatch) -> None:
    argv = ["--config-file", "missing.yaml", "--ranks", "fc6=1", "--output", "out.pth"]
    result = run("compress_fc.py", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "compress_fc: config file not found: missing.yaml"
    result = run("compress_fc.py", *argv, cwd=tmp_path, DETKIT_DEBUG="1")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "ConfigError: config file not found: missing.yaml" in result.stderr
    monkeypatch.chdir(tmp_path)  # --debug: the error is raised, not turned into a status
    with pytest.raises(ConfigError, match=r"config file not found: missing\.yaml"):
        load_tool("compress_fc").main(["--debug", *argv])

"""MODEL.DEVICE: auto picks CUDA only when there is one and says so; cpu with an idle GPU is
warned about; names that cannot work here are refused before any work."""

from __future__ import annotations

import logging

import pytest
import torch

from detkit.utils import device as device_module
from detkit.utils.device import device_problem, resolve_device


@pytest.fixture(autouse=True)
def _fresh_messages():
    device_module._say_once.cache_clear()
    yield
    device_module._say_once.cache_clear()


@pytest.mark.parametrize("has_cuda, expected", [(False, "cpu"), (True, "cuda")])
def test_auto_takes_cuda_only_when_there_is_one(monkeypatch, caplog, has_cuda, expected) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    with caplog.at_level(logging.INFO, logger="detkit.utils.device"):
        assert resolve_device("auto") == expected
        resolve_device("auto")
    assert caplog.text.count("MODEL.DEVICE=auto: running on") == 1  # said once
    assert ("Test GPU" in caplog.text) == has_cuda


def test_cpu_with_an_idle_gpu_is_warned_about(monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    with caplog.at_level(logging.WARNING, logger="detkit.utils.device"):
        assert resolve_device("cpu") == "cpu"
    assert "MODEL.DEVICE=cpu although cuda (Test GPU) is available" in caplog.text


def test_cpu_without_a_gpu_is_quiet(monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="detkit.utils.device"):
        assert resolve_device("cpu") == "cpu"
    assert caplog.text == ""


def test_devices_that_cannot_work_here_are_named(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in device_problem("cuda")
    assert "no CUDA device" in device_problem("cuda:1")
    assert "must be auto, cpu, cuda or cuda:N, got 'gpu'" in device_problem("gpu")
    assert device_problem("auto") is None and device_problem("cpu") is None

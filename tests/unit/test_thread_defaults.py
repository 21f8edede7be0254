"""Default thread split between the text model and the vision encoder, by core count."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmserve.config import EngineConfig


@pytest.mark.parametrize(("cpus", "text", "vision"), [
    (1, 1, 1), (2, 1, 1), (4, 3, 1), (8, 4, 4), (16, 8, 8), (64, 32, 32)])
def test_text_and_vision_threads_never_share_a_core_when_there_are_two(monkeypatch, cpus,
                                                                       text, vision):
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    cfg = EngineConfig(model_path=Path("m.gguf"), mmproj_path=Path("p.gguf"))
    assert (cfg.threads, cfg.threads_vision) == (text, vision)
    assert cpus == 1 or cfg.threads + cfg.threads_vision <= cpus


def test_a_text_only_model_keeps_every_small_machine_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert EngineConfig(model_path=Path("m.gguf")).threads == 2


def test_explicit_threads_win(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cfg = EngineConfig(model_path=Path("m.gguf"), mmproj_path=Path("p.gguf"), n_threads=3,
                       n_threads_vision=2)
    assert (cfg.threads, cfg.threads_vision) == (3, 2)

"""ServerSettings: defaults, VLMSERVE_* variables, flags on top, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlmserve.config import TokenBudget
from vlmserve.errors import ModelNotFoundError, VlmserveError
from vlmserve.settings import ServerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VLMSERVE_"):
            monkeypatch.delenv(name)


def test_defaults_are_local_and_private() -> None:
    s = ServerSettings.load()
    assert (s.host, s.port, s.api_key_value) == ("127.0.0.1", 7860, None)
    assert s.allow_remote_images is False
    assert (s.parallel, s.context_budget) == (4, 4096)


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMSERVE_PORT", "9000")
    monkeypatch.setenv("VLMSERVE_API_KEY", "from-env")
    monkeypatch.setenv("VLMSERVE_PARALLEL", "2")
    s = ServerSettings.load(port=9100, parallel=None)  # None: the flag was not given
    assert s.port == 9100 and s.parallel == 2 and s.api_key_value == "from-env"
    assert "from-env" not in repr(s)  # the key is a secret


def test_invalid_value_is_one_line_naming_flag_and_variable() -> None:
    with pytest.raises(VlmserveError) as info:
        ServerSettings.load(port=70000)
    assert "--port" in info.value.message and "VLMSERVE_PORT" in info.value.message
    assert "\n" not in info.value.message


def test_image_token_budget_settings() -> None:
    s = ServerSettings.load(image_min_tokens=128, image_max_tokens=2048)
    tokens = s.image_options().tokens
    assert (tokens.min_tokens, tokens.max_tokens) == (128, 2048)
    assert ServerSettings.load().image_options().tokens == TokenBudget(64, 1024)  # Qwen's floor
    with pytest.raises(VlmserveError, match="--image-min-tokens.*must not exceed"):
        ServerSettings.load(image_min_tokens=2048, image_max_tokens=1024)
    with pytest.raises(VlmserveError, match="--image-max-tokens"):
        ServerSettings.load(image_max_tokens=32)


def test_engine_config_and_limits(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        ServerSettings.load().to_engine_config()
    s = ServerSettings.load(model=tmp_path / "m.gguf", mmproj=tmp_path / "p.gguf",
                            ctx_size=2048, parallel=3, image_max_mb=2)
    config = s.to_engine_config()
    assert (config.n_ctx_per_slot, config.n_parallel) == (2048, 3)
    assert s.image_options().max_bytes == 2 * 1024 * 1024
    assert s.max_request_bytes > s.image_max_bytes * 4 // 3  # one base64 image fits
    assert ServerSettings.load(api_key="").api_key_value is None


def test_serve_flags_are_the_table_and_unset_ones_leave_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmserve.cli.main import build_parser
    from vlmserve.cli.settings_flags import given_settings

    monkeypatch.setenv("VLMSERVE_CTX_SIZE", "2048")
    args = build_parser().parse_args(["serve", "--port", "9100", "--no-ui"])
    s = ServerSettings.load(**given_settings(args))
    assert (s.ctx_size, s.port, s.ui, s.parallel) == (2048, 9100, False, 4)
    assert set(given_settings(args)) == set(ServerSettings.model_fields)


def test_model_flags_of_describe_take_the_table_defaults() -> None:
    from vlmserve.cli.main import build_parser
    from vlmserve.config import EngineConfig

    args = build_parser().parse_args(["describe", "x.jpg"])
    assert (args.ctx_size, args.image_slice) == (EngineConfig.n_ctx_per_slot,
                                                 EngineConfig.image_slice)

"""The deployment's options (no cluster needed): the KubeRay import path builds the app,
and bad replica counts or routers are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from vlmserve.cluster.deployment import (  # noqa: E402
    ClusterOptions,
    app_builder,
    parse_autoscale,
)
from vlmserve.errors import VlmserveError  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "rayservice.yaml"


def test_the_rayservice_manifest_names_a_builder_that_builds(tiny_model, monkeypatch) -> None:
    spec = yaml.safe_load(MANIFEST.read_text())["spec"]
    config = yaml.safe_load(spec["serveConfigV2"])
    app = config["applications"][0]
    assert app["import_path"] == "vlmserve.cluster.deployment:app_builder"
    assert config["http_options"]["port"] == 7860
    monkeypatch.setenv("VLMSERVE_MODEL", str(tiny_model.model))
    monkeypatch.setenv("VLMSERVE_MMPROJ", str(tiny_model.mmproj))
    built = app_builder(app["args"])
    assert type(built).__name__ == "Application"
    assert app_builder({"autoscale": "1:3", "router": "pow2"}) is not None


def test_bad_options_are_one_line_errors() -> None:
    assert parse_autoscale("1:4") == (1, 4)
    for bad in ("4", "a:b", ""):
        with pytest.raises(VlmserveError, match="MIN:MAX"):
            parse_autoscale(bad)
    with pytest.raises(VlmserveError, match="--autoscale"):
        ClusterOptions(autoscale=(3, 1))
    with pytest.raises(VlmserveError, match="--replicas"):
        ClusterOptions(replicas=0)
    with pytest.raises(VlmserveError, match="unknown router"):
        ClusterOptions(router="random")

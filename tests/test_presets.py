"""Presets: the configs shipped inside the package, usable by name wherever a path is."""

import pytest

from tests.conftest import REPO, invoke
from usmtl.config import config_to_dict, load_config
from usmtl.errors import ConfigError
from usmtl.presets import describe, preset_names, preset_path, resolve_config

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_every_repository_config_is_a_preset():
    assert preset_names() == CONFIGS
    assert {"paper", "paper_chained", "busbra", "quickstart", "mobile"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_preset_is_the_repository_file(name):
    with open(preset_path(name)) as f:
        assert f.read() == (REPO / "configs" / f"{name}.yaml").read_text()
    assert config_to_dict(load_config(name)) == \
        config_to_dict(load_config(str(REPO / "configs" / f"{name}.yaml")))
    assert describe(name)  # every preset says what it is for in its first comment


@pytest.mark.parametrize("text", ["paper", "paper.yaml"])
def test_names_resolve(text):
    assert resolve_config(text) == preset_path("paper")


def test_a_file_wins_over_a_preset(tmp_path, monkeypatch):
    (tmp_path / "paper.yaml").write_text("name: mine\ntasks: [{name: m, label: malignant}]\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("paper.yaml").name == "mine"
    assert load_config("paper").name == "paper"


@pytest.mark.parametrize("text", ["papers", "configs/nothere.yaml", "/nonexistent/paper.yaml"])
def test_unknown_preset_lists_the_presets(text):
    with pytest.raises(ConfigError, match=r"not found, and not a preset name \(presets: \["):
        load_config(text)


def test_presets_command():
    result = invoke("presets")
    assert result.exit_code == 0, result.output
    for name in CONFIGS:
        assert any(line.startswith(name + " ") for line in result.output.splitlines()), name
    assert "The protocol of Li, Guo et al." in result.output

"""The recommender config file: every mistake names the file, the line and the key; the shipped file is valid."""

from __future__ import annotations

import json

import pytest

from data.errors import ConfigFileError
from data.settings import REPO_ROOT
from recommender.config import from_dict, load_config

SHIPPED = (REPO_ROOT / "data" / "recommender.yaml").read_text(encoding="utf-8")


def _line(text: str, needle: str) -> int:
    return text.splitlines().index(next(ln for ln in text.splitlines() if needle in ln)) + 1


def test_shipped_config_is_valid_and_kept_as_written():
    cfg = load_config(path=REPO_ROOT / "data" / "recommender.yaml")
    assert cfg.action_weights["apply"] == 8.0
    assert cfg["interactions"]["half_life_days"] == 60 and isinstance(cfg["interactions"]["half_life_days"], int)
    assert cfg["ranker"]["params"]["num_leaves"] == 15
    # a trained model stores the plain dict as config.json and reads it back
    assert from_dict(json.loads(json.dumps(cfg.raw)), source="config.json").raw == cfg.raw


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("half_life_days: 60 ", "half_life_days: 0  ", "half_life_days", "interactions.half_life_days: must be > 0, got 0"),
        ("half_life_days: 60 ", "half_life_days: soon", "half_life_days", "interactions.half_life_days: must be a number, got 'soon'"),
        ("  tags: 12 ", "  tagz: 12 ", "tagz", "candidates: unknown key 'tagz'"),
        ("validation_fraction: 0.2", "validation_fraction: 1.5", "validation_fraction", "must be < 1, got 1.5"),
        ("chunk_subjects: 50000", "chunk_subjects: true", "chunk_subjects", "serving.chunk_subjects: must be a whole number, got True"),
        ("apply: 8.0,", "teleport: 8.0,", "action_weights", "unknown action 'teleport'"),
        ("positive_actions: [apply, complete]", "positive_actions: [apply, finish]", "positive_actions", "unknown action 'finish'"),
        ("  popular_days: 90\n", "  popular_days: 90\n  popular_days: 30\n", "popular_days: 30", "duplicate key 'popular_days'"),
        ("serving:\n", "servings:\n", "servings", "unknown key 'servings'"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, old, new, needle, words):
    assert old in SHIPPED
    text = SHIPPED.replace(old, new, 1)
    path = tmp_path / "recommender.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as err:
        load_config(path=path)
    assert str(err.value).startswith(f"{path}:{_line(text, needle)}: "), str(err.value)
    assert words in str(err.value)


def test_missing_key_names_its_section(tmp_path):
    text = SHIPPED.replace("  popular_list_size: 100      # size of the non-personalised list kept per audience\n", "")
    path = tmp_path / "recommender.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError, match=rf"recommender.yaml:{_line(text, 'serving:')}: serving: missing field 'popular_list_size'"):
        load_config(path=path)


def test_dict_config_errors_name_the_source_and_key():
    raw = load_config(path=REPO_ROOT / "data" / "recommender.yaml").raw
    raw["model"]["name"] = 3
    with pytest.raises(ConfigFileError, match=r"^model/config.json: model.name: must be text, got 3$"):
        from_dict(raw, source="model/config.json")


def test_overrides_are_checked_like_a_file():
    cfg = load_config(path=REPO_ROOT / "data" / "recommender.yaml")
    assert cfg.with_overrides({"serving": {"chunk_subjects": 10}})["serving"]["chunk_subjects"] == 10
    with pytest.raises(ConfigFileError, match=r"\(with overrides\): serving.chunk_subjects: must be > 0, got 0"):
        cfg.with_overrides({"serving": {"chunk_subjects": 0}})
    with pytest.raises(ConfigFileError, match="override names unknown section 'servings'"):
        cfg.with_overrides({"servings": {}})


def test_yaml_syntax_error_and_missing_file(tmp_path):
    path = tmp_path / "recommender.yaml"
    path.write_text("interactions:\n  action_weights: {view: 1.0\nmodel: {}\n", encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"recommender.yaml:3: not valid YAML"):
        load_config(path=path)
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_config(path=tmp_path / "nope.yaml")

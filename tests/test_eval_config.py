"""Eval configs (``yiwang eval CONFIG``, experiments/*.yaml): every mistake names the file, the line and the key."""

from __future__ import annotations

import pytest

from data.errors import ConfigFileError
from data.settings import REPO_ROOT
from recommender.evaluation import check_eval_config, load_eval_config

GOOD = """\
title: a small run
data:
  interactions: inter.csv
  user_col: user
  item_col: movie
  time_col: when
protocol: leave-last-out
k: 5
metrics: [ndcg, hit]
models:
  ease: {l2: [10.0, 100.0]}
  pop: {}
out: out
"""


def _load(tmp_path, text):
    path = tmp_path / "eval.yaml"
    path.write_text(text, encoding="utf-8")
    return load_eval_config(path)


def test_shipped_experiment_config_is_valid():
    cfg = load_eval_config(REPO_ROOT / "experiments" / "ml100k.yaml")
    assert cfg["protocol"] == "recbole-random" and cfg["data"]["user_col"] == 0
    assert cfg["_base"] == REPO_ROOT / "experiments"


def test_good_config_is_returned_as_written(tmp_path):
    cfg = _load(tmp_path, GOOD)
    assert cfg["models"] == {"ease": {"l2": [10.0, 100.0]}, "pop": {}}
    assert cfg["_source"].endswith("eval.yaml")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("k: 5", "k: 0", ":8: k: expected a positive integer, got 0"),
        ("k: 5", "k: five", ":8: k: expected a positive integer, got 'five'"),
        ("protocol: leave-last-out", "protocol: random", ":7: protocol: unknown protocol 'random'"),
        ("out: out", "outt: out", ":13: unknown key 'outt'"),
        ("  time_col: when\n", "  time_col: when\n  timecol: when\n", ":7: data: unknown key 'timecol'"),
        ("metrics: [ndcg, hit]", "metrics: [ndcg, auc]", ":9: metrics: unknown metric 'auc'"),
        ("  pop: {}", "  lightgbm: {}", ":12: models.lightgbm: unknown model 'lightgbm'"),
        ("{l2: [10.0, 100.0]}", "{lambda: 3}", ":11: models.ease: model 'ease': unknown parameter(s) lambda"),
        ("  interactions: inter.csv\n", "", ":2: data.interactions: required"),
        ("  time_col: when\n", "  time_col: when\n  relevant_actions: [apply]\n",
         ":7: data.relevant_actions only apply to data.source: events"),
        ("title: a small run", "title: [a, b]", ":1: title: must be text, got a list"),
        ("  ease: {l2: [10.0, 100.0]}\n", "  ease: {l2: [10.0, 100.0]}\n  ease: {}\n", ":12: models: duplicate key 'ease'"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, old, new, expected):
    assert old in GOOD
    with pytest.raises(ConfigFileError) as err:
        _load(tmp_path, GOOD.replace(old, new))
    assert str(err.value).startswith(f"{tmp_path / 'eval.yaml'}{expected}"), str(err.value)


def test_a_config_built_in_code_names_its_source_and_key():
    cfg = {"_source": "--interactions", "data": {"interactions": "x.csv", "format": "csv"}, "models": {"pop": {}}}
    with pytest.raises(ConfigFileError, match=r"^--interactions: data.format: expected one of pairs, sequences"):
        check_eval_config(cfg)
    cfg = {"_source": "city.yaml", "data": {"source": "events"}, "protocol": "recbole-random", "models": {"pop": {}}}
    with pytest.raises(ConfigFileError, match=r"^city.yaml: protocol: the store's events are evaluated with 'temporal'"):
        check_eval_config(cfg)


def test_synthetic_experiment_config(tmp_path):
    from experiments.synthetic_eval import load_experiment

    shipped = REPO_ROOT / "experiments" / "synthetic.yaml"
    cfg = load_experiment(shipped, {"people": 500, "out": None})
    assert cfg["city"]["people"] == 500 and cfg["groups"]["students"] == {"occupation": "student"}
    text = shipped.read_text(encoding="utf-8")
    line = text.splitlines().index("  students: {occupation: student}") + 1
    bad = tmp_path / "synthetic.yaml"
    for old, new, words in [
        ("students: {occupation: student}", "students: {job: student}", "groups.students: unknown key 'job'"),
        ("students: {occupation: student}", "students: {occupation: student, kind: person}",
         "groups.students: give exactly one of"),
    ]:
        bad.write_text(text.replace(old, new), encoding="utf-8")
        with pytest.raises(ConfigFileError, match=rf"^{bad}:{line}: {words}"):
            load_experiment(bad, {})

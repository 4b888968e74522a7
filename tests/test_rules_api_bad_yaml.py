"""YAML the loader's constructors refuse (a tag or a value of the wrong shape) is a 422 naming the line, not a 500.

The fuzzer (`test_api_fuzz.py::test_no_server_errors_long`) found `PUT /v1/rules` answering 500: yaml lets Python's
own ValueError/KeyError out of a scalar's constructor (`2026-13-45`, `!!int abc`, `!!bool x`)."""

from __future__ import annotations

import httpx
import pytest

from data.settings import load_settings
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from yiwang.migrations import open_db


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = load_settings(home=tmp_path_factory.mktemp("home"), id_hash_key="test-key")
    db = open_db(settings.db_path)
    _, key = create_key(db, "ops", ["rules:write"])
    db.conn.close()
    with run_api(settings) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as c:
        yield c


@pytest.mark.parametrize("value, line_2_says", [
    ("!foo 3", "!foo"),
    ("!!int abc", "'abc' is not a valid int"),
    ("!!bool maybe", "'maybe' is not a valid bool"),
    ("!!timestamp someday", "'someday' is not a valid timestamp"),
    ("2026-13-45", "'2026-13-45' is not a valid timestamp (month must be in 1..12)"),
    ("!!float x", "'x' is not a valid float"),
])
def test_a_value_yaml_cannot_construct_is_a_422_naming_its_line(client, value, line_2_says):
    content = f"rules:\n  - id: {value}\n"
    resp = client.put("/v1/rules", json={"content": content})
    assert resp.status_code == 422, resp.text
    assert ":2: not valid YAML" in resp.text and line_2_says in resp.text

"""What other engines read of the tags, through the taggers (taggers.tags_in_force, taggers.store)."""

from __future__ import annotations

from datetime import date

import taggers
from taggers import store
from tagging import put_tags, tag_row

AS_OF = date(2026, 11, 20)


def test_tags_in_force_on_a_day_for_some_codes(settings, db):
    put_tags(db, [
        tag_row("P1", "crowd.elderly", date(2020, 1, 1), as_of=AS_OF),
        tag_row("P1", "life_event.birth", date(2026, 11, 1), as_of=AS_OF, valid_until=date(2026, 11, 30)),
        tag_row("P2", "life_event.birth", date(2026, 11, 21), as_of=AS_OF),         # not yet valid on AS_OF
        tag_row("P3", "life_event.birth", date(2026, 1, 1), as_of=AS_OF, valid_until=date(2026, 6, 30)),  # lapsed
        tag_row("P4", "crowd.hardship", date(2026, 1, 1), as_of=AS_OF, sensitive=True),
    ])
    store.delete_tag(db, "P1", "crowd.elderly")  # the citizen's deletion holds for every reader
    on_day = taggers.tags_in_force(settings, db, AS_OF)
    assert sorted(on_day.select("subject_id", "code").rows()) == [("P1", "life_event.birth"), ("P4", "crowd.hardship")]
    births = taggers.tags_in_force(settings, db, codes=["life_event.birth"])
    assert sorted(births["subject_id"]) == ["P1", "P2", "P3"]
    assert births.schema["valid_from"].is_temporal()
    assert taggers.tags_in_force(settings, db, codes=[]).height == 0


def test_fairness_groups_and_traces_of_a_subject(db):
    put_tags(db, [
        tag_row("P1", "crowd.elderly", date(2026, 1, 1), as_of=AS_OF),
        tag_row("P2", "occupation.student", date(2026, 1, 1), as_of=AS_OF),
        tag_row("P3", "occupation.driver", date(2026, 1, 1), as_of=AS_OF),
        tag_row("P4", "crowd.hardship", date(2026, 1, 1), as_of=AS_OF, sensitive=True),
    ])
    assert sorted(store.group_tags(db.conn).rows()) == [("P1", "crowd.elderly"), ("P2", "occupation.student")]
    assert store.has_any(db.conn, "P3") and not store.has_any(db.conn, "P9")
    store.delete_tag(db, "P3", "occupation.driver")
    assert store.has_any(db.conn, "P3")  # a deletion is a trace of the subject too

"""An enterprise's USCC is never mistaken for a resident ID number: a USCC of a 青浦区 company (region code
310118) reads, digit for digit, like an address code followed by a birth year 18xx, and some of them even carry
a valid resident-ID check digit. Resident IDs start with a province digit (1-8), enterprise USCCs with 9."""

from __future__ import annotations

import polars as pl

from data.contract import RESIDENT_ID_IN_TEXT, is_valid_resident_id, is_valid_uscc
from data.registry import stored_record
from test_ingest import PEOPLE, db, ingest, quarantined, settings, write_export  # noqa: F401  (fixtures)

# From the synthetic city (seed 7): a valid USCC that is also a valid resident ID by its checksum.
QINGPU_USCC = "913101180604231521"


def test_a_qingpu_uscc_is_a_uscc_not_a_resident_id(settings, db, tmp_path):
    assert is_valid_uscc(QINGPU_USCC) and is_valid_resident_id(QINGPU_USCC)
    assert not pl.Series([QINGPU_USCC]).str.contains(RESIDENT_ID_IN_TEXT).item()
    enterprises = (
        "enterprise_id,name,industry,district,founded_on,employees,uscc,legal_rep_id\n"
        f"E1,上海辰诚投资管理有限公司,J,青浦区,2011-05-27,5,{QINGPU_USCC},P1\n"
    )
    summary = ingest(settings, db, write_export(tmp_path, people=PEOPLE, enterprises=enterprises))
    assert quarantined(db, summary.ingest_id, "enterprises") == []
    assert stored_record(db.conn, "enterprises", "E1", ["uscc"]) == (QINGPU_USCC,)

"""The dry-run preview's sample: counts of everything, a few masked payloads of each company and depth."""

from __future__ import annotations

import json

import pandas as pd

from associate import staged
from associate.preview import NO_COMPANY, PayloadSample, masked_payload


def to_send(rows: list[tuple[str, str | None, int, str]]) -> pd.DataFrame:
    """Elements to send from (key, company, depth, method), each with a mobile and an email."""
    frame = staged.TO_SEND.empty()
    body = {key: json.dumps({"profiles": [{
        "identifiers": [{"type": "mobile", "value": f"9198765{i:05d}"}, {"type": "email", "value": f"{key}@example.com"}],
        "commChannels": [{"type": "mobile", "value": f"9198765{i:05d}", "primary": True}],
        "firstName": "Asha"}]}) for i, (key, *_rest) in enumerate(rows)}
    data = pd.DataFrame({
        "entity_key": [r[0] for r in rows], "company_external_id": [r[1] for r in rows],
        "depth": [r[2] for r in rows], "payload": [body[r[0]] for r in rows], "payload_hash": "h",
        "hierarchy_code": "code", "role_code": "FC", "source": "INSTORE", "account_id": None,
        "change": "new", "method": [r[3] for r in rows],
    })
    return data.astype(frame.dtypes.to_dict())


def fleet(companies: int, per_company: int, start: int = 0) -> list[tuple[str, str | None, int, str]]:
    """Each company: an admin at depth 0 and drivers at depth 1; every third one an update."""
    return [(f"C{c}-{i}", f"CO{c}", 0 if i == 0 else 1, "PUT" if i % 3 == 0 else "POST")
            for c in range(start, start + companies) for i in range(per_company)]


def test_counts_cover_every_payload_and_the_sample_the_first_of_each_company_and_depth():
    sample = PayloadSample()
    rows = fleet(20, 10) + [("LONE", None, 0, "POST")]
    for part in (rows[:77], rows[77:150], rows[150:]):  # frames as detect_changes hands them over
        sample.add(to_send(part))
    doc = sample.document("file:///staging/run/changes/dry_run_to_send.parquet")

    assert doc["payloads_to_send"] == 201
    assert doc["all_payloads"].endswith("dry_run_to_send.parquet")
    assert doc["counts"]["by_method"] == {"POST": sum(r[3] == "POST" for r in rows), "PUT": sum(r[3] == "PUT" for r in rows)}
    assert doc["counts"]["by_depth"] == {"0": 21, "1": 180}
    assert doc["counts"]["companies"] == 21
    # Kept: the first three rows of each company (the lone customer's "no company" too) and
    # of each depth, nothing else, in row order.
    firsts: set[str] = set()
    for column in (1, 2):  # company, depth
        groups: dict = {}
        for row in rows:
            groups.setdefault(row[column], []).append(row[0])
        firsts |= {key for keys in groups.values() for key in keys[:3]}
    assert [p["customer_key"] for p in doc["payloads"]] == [r[0] for r in rows if r[0] in firsts]
    assert len(doc["payloads"]) == 20 * 3 + 1 + 1  # C0-3 is the third driver (depth 1) of the run
    assert doc["payloads"][-1]["company_external_id"] == NO_COMPANY

def test_the_sample_is_capped_however_many_companies():
    sample = PayloadSample(limit=50)
    for start in range(0, 1000, 250):
        sample.add(to_send(fleet(250, 4, start=start)))
    doc = sample.document("file:///x")
    assert doc["payloads_to_send"] == 4000 and len(doc["payloads"]) == 50
    assert doc["counts"]["companies"] == 1000
    assert len(next(v for k, v in doc["counts"].items() if k.startswith("by_company"))) == 100


def test_depths_reached_only_late_are_sampled_too():
    sample = PayloadSample(per_group=2)
    sample.add(to_send([(f"A{i}", "CO1", 0, "POST") for i in range(5)]))
    sample.add(to_send([(f"B{i}", "CO1", 3, "POST") for i in range(5)]))
    depths = [p["depth"] for p in sample.samples]
    assert depths == [0, 0, 3, 3]


def test_mobiles_and_emails_are_masked_in_the_sample():
    sample = PayloadSample()
    sample.add(to_send([("K1", "CO1", 0, "POST")]))
    text = json.dumps(sample.samples)
    assert "919876500000" not in text and "K1@example.com" not in text
    assert "91******0000" in text and "K*@example.com" in text and "Asha" in text


def test_masked_payload_masks_fields_named_mobile_or_email():
    assert masked_payload({"fields": {"alt_mobile": "919812345678", "city": "Pune"}, "n": [1]}) == {
        "fields": {"alt_mobile": "91******5678", "city": "Pune"}, "n": [1]}

"""associate.report: the run summary as log text and as an HTML page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pandas as pd

from associate.report import RunSummary


def _outcomes():
    customers = pd.DataFrame([
        {"entity": "customer", "entity_key": "a", "status": "success", "capillary_id": 1, "error_code": None,
         "error_message": None, "attempts": 1, "synced_at": pd.Timestamp("2026-01-01", tz="UTC"),
         "payload_hash": "h", "warnings": "[]"},
        {"entity": "customer", "entity_key": "b", "status": "warning", "capillary_id": 2, "error_code": None,
         "error_message": None, "attempts": 1, "synced_at": pd.Timestamp("2026-01-01", tz="UTC"),
         "payload_hash": "h", "warnings": json.dumps([{"code": 8056, "message": "Invalid mobile"}])},
        {"entity": "customer", "entity_key": "c", "status": "failed", "capillary_id": None, "error_code": 1032,
         "error_message": "mobile already used", "attempts": 2,
         "synced_at": pd.Timestamp("2026-01-01", tz="UTC"), "payload_hash": "h", "warnings": "[]"},
        {"entity": "customer", "entity_key": "d", "status": "failed", "capillary_id": None, "error_code": None,
         "error_message": "not sent: fleet company X could not be created", "attempts": 0,
         "synced_at": pd.Timestamp("2026-01-01", tz="UTC"), "payload_hash": None, "warnings": "[]"},
    ])
    companies = pd.DataFrame([
        {"entity": "company", "entity_key": k, "status": s, "capillary_id": i, "error_code": None,
         "error_message": None, "attempts": 1, "synced_at": pd.Timestamp("2026-01-01", tz="UTC"),
         "payload_hash": "x", "warnings": "[]", "action": a}
        for k, s, i, a in [("C1", "success", 1, "created"), ("C2", "success", 2, "updated"),
                           ("C3", "success", 3, "created"), ("X", "failed", None, "failed")]
    ])
    return [companies, customers]


def summary(**extra):
    return RunSummary.build(
        run_id="scheduled__2026-01-01T00:00:00+00:00",
        extracted={"customers": 120, "companies": 5},
        quarantine_summary=pd.DataFrame([
            {"entity": "customer", "check": "mobile_valid", "rows": 7},
            {"entity": "customer", "check": "parent_rejected", "rows": 2},
            {"entity": "company", "check": "hierarchy_exists", "rows": 1},
        ]),
        plan={"built": 110, "to_send": 4, "unchanged": 106, "held_back": 1, "dry_run": False},
        outcomes=_outcomes(), **extra,
    )


def test_summary_counts_every_stage():
    s = summary()
    assert (s.customers_extracted, s.companies_extracted) == (120, 5)
    assert s.quarantined_by_check[("customer", "mobile_valid")] == 7 and s.quarantined == 10
    assert (s.unchanged, s.sent, s.held_back) == (106, 4, 1)
    assert (s.success, s.warning, s.failed) == (1, 1, 2)
    assert s.failed_by_code == {"1032": 1, "no code": 1}
    assert s.warnings_by_code == {"8056": 1}
    assert (s.companies_created, s.companies_updated, s.companies["failed"]) == (2, 1, 1)
    assert s.to_dict()["quarantined_by_check"]["customer/mobile_valid"] == 7


def test_text_has_aligned_tables_with_the_numbers():
    text = summary().to_text()
    lines = text.splitlines()
    assert "Run summary" in lines and "Quarantine by check" in lines and "Warnings by code" in lines
    assert any(line.split() == ["customer", "mobile_valid", "7"] for line in lines)
    assert any(line.split() == ["unchanged", "(not", "sent)", "106"] for line in lines)
    assert any(line.split() == ["1032", "1"] for line in lines)
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("----"))
    assert len(lines[rule - 1]) <= len(lines[rule]) + 1  # header as wide as its rule


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.cells, self.links, self._tag = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        if self._tag in ("h1", "h2"):
            self.headings.append(data.strip())
        elif self._tag == "td":
            self.cells.append(data.strip())


def test_html_report_has_headings_tables_and_data_docs_link(tmp_path):
    docs = tmp_path / "data_docs" / "index.html"
    path = summary(data_docs=str(docs)).to_html(tmp_path / "out" / "report.html")
    parsed = _Tables()
    parsed.feed(open(path, encoding="utf-8").read())
    assert "Quarantine by check" in parsed.headings and "Failed customers by error code" in parsed.headings
    assert "mobile_valid" in parsed.cells and "106" in parsed.cells
    assert parsed.links == [docs.as_uri()]


def test_html_escapes_what_it_shows(tmp_path):
    s = RunSummary(run_id="manual__<script>alert(1)</script>")
    text = open(s.to_html(tmp_path / "r.html"), encoding="utf-8").read()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_held_back_associations_are_counted_and_listed_by_code():
    from associate.reconcile import not_sent_outcomes

    moved = not_sent_outcomes(["m1", "m2", "m3"], ["role change FC -> FA is not allowed"] * 3,
                              codes=[1627, 1627, 1628], now=pd.Timestamp("2026-01-01", tz="UTC"))
    # A forced send the API refused with 1627 is a failed send, not a held-back one.
    refused = not_sent_outcomes(["m4"], ["fleet user role can't be changed"], codes=[1627],
                                now=pd.Timestamp("2026-01-01", tz="UTC")).assign(payload_hash="h")
    s = RunSummary.build(run_id="r", plan={"to_send": 5, "register": 3, "update": 2, "held_back": 3,
                                           "association_blocked": 3},
                         outcomes=[moved, refused])
    assert (s.register, s.update, s.association_blocked) == (3, 2, 3)
    assert s.association_blocked_by_code == {"1627": 2, "1628": 1}
    assert s.failed_by_code == {"1627": 3, "1628": 1}
    lines = s.to_text().splitlines()
    assert any(line.split() == ["1627", "role", "change", "2"] for line in lines)
    assert any(line.split() == ["to", "update", "(PUT)", "2"] for line in lines)
    assert any("association cannot move" in line and line.split()[-1] == "3" for line in lines)


def test_children_held_back_for_a_failed_parent_are_failures_under_their_own_label():
    from associate import staged

    rows = [staged.outcome_record("customer", key, "failed", error_message=message,
                                  synced_at=pd.Timestamp("2026-01-01", tz="UTC"), payload_hash="h")
            for key, message in [("p", "bad"), ("c1", staged.parent_failed_message("p")),
                                 ("c2", staged.parent_failed_message("c1"))]]
    s = RunSummary.build(run_id="r", outcomes=[staged.outcome_frame(rows)])
    assert s.failed == 3
    assert s.failed_by_code == {"no code": 1, staged.PARENT_FAILED_LABEL: 2}

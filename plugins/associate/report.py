"""The run summary: counts of every stage, as text tables for the task log and as an HTML page."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from associate import staged
from associate.guidance import NEEDS_ACTION, what_to_do
from associate.masking import mask_text
from associate.tables import (
    CODE_COMPANY_CHANGE, CODE_HIERARCHY_CHANGE, CODE_ROLE_CHANGE, ENTITY_COMPANY, ENTITY_CUSTOMER, STATUS_FAILED,
    STATUS_SUCCESS, STATUS_WARNING,
)

NO_CODE = "no code"
# Rows the page lists, beyond the counts: enough to act on, never the whole run.
SAMPLES_PER_CHECK = 5
LISTED_CUSTOMERS = 200
HISTORY_RUNS = 14
# The outcome columns a summary counts from (the company ``action`` where there is one);
# the rest of a million rows need not be read.
SUMMARY_COLUMNS = ("entity", "entity_key", "status", "error_code", "error_message", "synced_at", "payload_hash",
                   "warnings", "action")
ASSOCIATION_CODES = (CODE_HIERARCHY_CHANGE, CODE_ROLE_CHANGE, CODE_COMPANY_CHANGE)
ASSOCIATION_NAMES = {str(CODE_HIERARCHY_CHANGE): "hierarchy change", str(CODE_ROLE_CHANGE): "role change",
                     str(CODE_COMPANY_CHANGE): "company change"}


@dataclass
class RunSummary:
    """What one run did, in numbers."""

    run_id: str = ""
    mode: str = ""
    customers_extracted: int = 0
    companies_extracted: int = 0
    # (entity, check) -> rows quarantined by that check; a row may fail several checks.
    quarantined_by_check: dict[tuple[str, str], int] = field(default_factory=dict)
    built: int = 0
    unchanged: int = 0
    sent: int = 0
    held_back: int = 0
    register: int = 0
    update: int = 0
    # Registered customers whose hierarchy/role/company would move (1626/1627/1628): not sent.
    association_blocked: int = 0
    association_blocked_by_code: dict[str, int] = field(default_factory=dict)
    success: int = 0
    warning: int = 0
    failed: int = 0
    warnings_by_code: dict[str, int] = field(default_factory=dict)
    failed_by_code: dict[str, int] = field(default_factory=dict)
    companies: dict[str, int] = field(default_factory=dict)  # created/updated/unchanged/failed
    dry_run: bool = False
    preview: str | None = None
    data_docs: str | None = None
    # A sentence the report leads with, e.g. that the approval gate rejected the send.
    notice: str | None = None
    # (entity, check, key, column, reason), masked as the quarantine table is: a few per check.
    quarantine_samples: list[tuple] = field(default_factory=list)
    # (customer key, code, message (masked), what to do); at most LISTED_CUSTOMERS each.
    failed_customers: list[tuple] = field(default_factory=list)
    needs_action: list[tuple] = field(default_factory=list)
    # (run id, success, warning, failed, quarantined) of the latest runs, oldest first.
    history: list[tuple] = field(default_factory=list)

    @property
    def companies_created(self) -> int:
        return self.companies.get("created", 0)

    @property
    def companies_updated(self) -> int:
        return self.companies.get("updated", 0)

    @property
    def quarantined(self) -> int:
        """(row, check) pairs quarantined."""
        return sum(self.quarantined_by_check.values())

    @classmethod
    def build(cls, *, run_id: str, extracted: Mapping[str, int] | None = None,
              quarantine_summary: pd.DataFrame | None = None, plan: Mapping[str, Any] | None = None,
              outcomes: pd.DataFrame | Iterable[pd.DataFrame] | None = None,
              data_docs: str | None = None, mode: str = "", quarantine_rows: pd.DataFrame | None = None,
              history: pd.DataFrame | None = None) -> RunSummary:
        """Count from the stage outputs: extract counts, validation summary, send plan, outcomes."""
        from associate.reconcile import combine_outcomes

        extracted = dict(extracted or {})
        plan = dict(plan or {})
        summary = cls(run_id=run_id, mode=mode or str(plan.get("mode", "")), data_docs=data_docs,
                      customers_extracted=int(extracted.get("customers", 0)),
                      companies_extracted=int(extracted.get("companies", 0)),
                      built=int(plan.get("built", 0)), unchanged=int(plan.get("unchanged", 0)),
                      sent=int(plan.get("to_send", 0)), held_back=int(plan.get("held_back", 0)),
                      register=int(plan.get("register", 0)), update=int(plan.get("update", 0)),
                      association_blocked=int(plan.get("association_blocked", 0)),
                      dry_run=bool(plan.get("dry_run", False)), preview=plan.get("preview"))
        if quarantine_summary is not None and len(quarantine_summary):
            for entity, check, rows in quarantine_summary[["entity", "check", "rows"]].itertuples(index=False):
                key = (str(entity), str(check))
                summary.quarantined_by_check[key] = summary.quarantined_by_check.get(key, 0) + int(rows)
        frame = combine_outcomes(_frames(outcomes))
        customers = frame[frame["entity"] == ENTITY_CUSTOMER]
        status = customers["status"].value_counts()
        summary.success = int(status.get(STATUS_SUCCESS, 0))
        summary.warning = int(status.get(STATUS_WARNING, 0))
        summary.failed = int(status.get(STATUS_FAILED, 0))
        failed = customers[customers["status"] == STATUS_FAILED]
        summary.failed_by_code = _by_code(failed["error_code"], failed["error_message"])
        moved = failed[failed["error_code"].isin(ASSOCIATION_CODES) & failed["payload_hash"].isna()]
        summary.association_blocked_by_code = _by_code(moved["error_code"])
        codes: Counter[str] = Counter()
        texts = customers["warnings"].dropna()
        # Most customers have none: a million "[]" were a million json.loads (1.8 s).
        for text in texts[texts.astype(str) != "[]"]:
            for warning in json.loads(text) if isinstance(text, str) else text:
                codes[str(warning.get("code", NO_CODE))] += 1
        summary.warnings_by_code = dict(sorted(codes.items()))
        listed = [(str(key), NO_CODE if pd.isna(code) else str(int(code)), mask_text(message),
                   what_to_do(None if pd.isna(code) else code))
                  for key, code, message in failed[["entity_key", "error_code", "error_message"]]
                  .sort_values(["error_code", "entity_key"]).itertuples(index=False)]
        summary.failed_customers = listed[:LISTED_CUSTOMERS]
        summary.needs_action = [row for row in listed if row[1] in NEEDS_ACTION][:LISTED_CUSTOMERS]
        if quarantine_rows is not None and len(quarantine_rows):
            columns = ["entity", "check", "entity_key", "column_name", "reason"]
            ordered = quarantine_rows[columns].astype(str).sort_values(columns)
            summary.quarantine_samples = [tuple(r) for r in ordered.groupby(["entity", "check"]).head(
                SAMPLES_PER_CHECK).itertuples(index=False)]
        if history is not None:
            rows = [tuple(r) for r in history[["run_id", "success", "warning", "failed", "quarantined"]]
                    .itertuples(index=False)] if len(history) else []
            if run_id not in {row[0] for row in rows}:  # the latest: this run, counted from its outcomes
                rows.append((run_id, summary.success, summary.warning, summary.failed, summary.quarantined))
            summary.history = rows[-HISTORY_RUNS:]
        companies = frame[frame["entity"] == ENTITY_COMPANY]
        # The company operator adds ``action`` (created/updated/unchanged/failed); without
        # it only the status is known.
        column = "action" if "action" in companies.columns and companies["action"].notna().all() else "status"
        summary.companies = {str(k): int(v) for k, v in companies[column].value_counts().items()}
        return summary

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for XCom or JSON): quarantine keys become ``entity/check``."""
        data = asdict(self)
        data["quarantined_by_check"] = {f"{e}/{c}": n for (e, c), n in self.quarantined_by_check.items()}
        return data

    def sections(self) -> list[tuple[str, list[str], list[tuple]]]:
        """(title, header, rows) of every table of the report."""
        overview = [
            ("customers extracted", self.customers_extracted),
            ("companies extracted", self.companies_extracted),
            ("quarantined (row, check) pairs", self.quarantined),
            ("payloads built", self.built), ("unchanged (not sent)", self.unchanged),
            ("to send", self.sent), ("  to register (POST)", self.register), ("  to update (PUT)", self.update),
            ("held back (not sendable)", self.held_back),
            ("  association cannot move (1626/1627/1628)", self.association_blocked),
            ("success", self.success), ("success with warnings", self.warning), ("failed", self.failed),
        ]
        if self.dry_run:
            overview.append(("dry run", f"nothing sent; preview: {self.preview or '-'}"))
        sections = [("Run summary", ["item", "count"], overview)]
        sections.append(("Quarantine by check", ["entity", "check", "rows"],
                         [(e, c, n) for (e, c), n in sorted(self.quarantined_by_check.items())]))
        sections.append(("Companies", ["action", "companies"], sorted(self.companies.items())))
        sections.append(("Failed customers by error code", ["code", "customers"],
                         sorted(self.failed_by_code.items())))
        sections.append(("Held back: association cannot move (move them in Capillary, then send with "
                         "customer_keys; see associate_sync_results)", ["code", "customers"],
                         [(f"{code} {ASSOCIATION_NAMES.get(code, '')}".strip(), n)
                          for code, n in sorted(self.association_blocked_by_code.items())]))
        sections.append(("Warnings by code", ["code", "warnings"], sorted(self.warnings_by_code.items())))
        sections.append((f"Needs action in Capillary (first {LISTED_CUSTOMERS})",
                         ["customer", "code", "message", "what to do"], self.needs_action))
        sections.append((f"Failed customers (first {LISTED_CUSTOMERS} by code; all in associate_sync_results)",
                         ["customer", "code", "message", "what to do"], self.failed_customers))
        sections.append((f"Quarantined rows ({SAMPLES_PER_CHECK} per check; all in associate_quarantine)",
                         ["entity", "check", "key", "column", "reason"], self.quarantine_samples))
        sections.append(("Latest runs", ["run", "success", "warning", "failed", "quarantined"], self.history))
        return sections

    def to_text(self) -> str:
        """Readable fixed-width tables for the task log."""
        blocks = [f"Run {self.run_id}" + (f" ({self.mode} extract)" if self.mode else "")]
        if self.notice:
            blocks.append(self.notice)
        for title, header, rows in self.sections():
            blocks.append(_text_table(title, header, rows))
        if self.data_docs:
            blocks.append(f"Data Docs: {self.data_docs}")
        return "\n\n".join(blocks)

    def to_html(self, path: str | Path) -> str:
        """Write the report as a self-contained HTML page; return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        esc = html.escape
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Customer association run {esc(self.run_id)}</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
            "table{border-collapse:collapse;margin-bottom:1.5em}"
            "th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}"
            "td.n{text-align:right}th{background:#f0f0f0}.empty{color:#777}</style>",
            "</head><body>",
            f"<h1>Customer association run <code>{esc(self.run_id)}</code></h1>",
        ]
        if self.notice:
            parts.append(f"<p><strong>{esc(self.notice)}</strong></p>")
        if self.mode:
            parts.append(f"<p>Extract mode: {esc(self.mode)}</p>")
        if self.data_docs:
            parts.append(f'<p>Validation details: <a href="{esc(_href(self.data_docs, path.parent))}">Data Docs</a></p>')
        if self.dry_run and self.preview:
            parts.append(f'<p>Dry run, nothing sent: <a href="{esc(_href(self.preview, path.parent))}">payload '
                         "preview</a> (counts and a masked sample)</p>")
        if len(self.history) > 1:
            parts.append("<h2>Latest runs</h2>" + history_chart(self.history))
        for title, header, rows in self.sections():
            parts.append(f"<h2>{esc(title)}</h2>")
            if not rows:
                parts.append('<p class="empty">none</p>')
                continue
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
            for row in rows:
                cells = "".join(
                    f'<td class="n">{v}</td>' if isinstance(v, int) else f"<td>{esc(str(v))}</td>" for v in row
                )
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table>")
        parts.append("</body></html>")
        path.write_text("\n".join(parts), encoding="utf-8")
        return str(path)


HISTORY_SERIES = (("success", 1, "#2e7d32"), ("warning", 2, "#f9a825"), ("failed", 3, "#c62828"),
                  ("quarantined", 4, "#6a1b9a"))


def history_chart(history: list[tuple], *, width: int = 640, height: int = 220) -> str:
    """An inline SVG line chart of the latest runs' outcomes (no script, opens anywhere)."""
    left, bottom, top, right = 50, 30, 10, 110
    top_value = max([1] + [int(row[i]) for row in history for _, i, _ in HISTORY_SERIES])
    step = (width - left - right) / max(1, len(history) - 1)

    def x(i: int) -> float:
        return left + i * step

    def y(v: int) -> float:
        return top + (height - top - bottom) * (1 - int(v) / top_value)

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="outcomes of the latest {len(history)} runs">',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{y(top_value) + 4}" text-anchor="end" font-size="11">{top_value}</text>',
             f'<text x="{left - 6}" y="{y(0) + 4}" text-anchor="end" font-size="11">0</text>']
    for name, column, colour in HISTORY_SERIES:
        points = " ".join(f"{x(i):.1f},{y(row[column]):.1f}" for i, row in enumerate(history))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f"<title>{name}</title></polyline>")
        parts.append(f'<text x="{width - right + 8}" y="{y(history[-1][column]) + 4}" font-size="11" '
                     f'fill="{colour}">{name}</text>')
    for i, row in enumerate(history):
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(0):.1f}" r="2"><title>{esc(str(row[0]))}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _frames(outcomes: Any) -> list[pd.DataFrame]:
    if outcomes is None:
        return []
    if isinstance(outcomes, pd.DataFrame):
        return [outcomes]
    from associate import staging

    return [staging.read_frame(o) if isinstance(o, str) else o for o in outcomes]


def _by_code(codes: pd.Series, messages: pd.Series | None = None) -> dict[str, int]:
    labels = codes.astype(object).map(lambda v: NO_CODE if pd.isna(v) else str(int(v)))
    if messages is not None:
        # Held back because the parent failed: no code, counted under their own label.
        parent_failed = (labels == NO_CODE) & messages.astype(str).str.startswith(staged.PARENT_FAILED_PREFIX)
        labels = labels.where(~parent_failed, staged.PARENT_FAILED_LABEL)
    return {str(k): int(v) for k, v in sorted(labels.value_counts().items())}


def _href(target: str, page_dir: Path | None = None) -> str:
    """A link from the report page: relative inside the run's folder (it opens where the page is served)."""
    if "://" in target:
        return target
    resolved = Path(target).resolve()
    if page_dir is not None and resolved.is_relative_to(page_dir.resolve()):
        return resolved.relative_to(page_dir.resolve()).as_posix()
    return resolved.as_uri()


def _text_table(title: str, header: list[str], rows: list[tuple]) -> str:
    if not rows:
        return f"{title}\n  (none)"
    cells = [[str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "  " + "  ".join(v.rjust(w) if num else v.ljust(w)
                                for v, w, num in zip(values, widths, numeric)).rstrip()

    rule = "  " + "  ".join("-" * w for w in widths)
    return "\n".join([title, line(header), rule, *(line(r) for r in cells)])

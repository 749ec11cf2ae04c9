"""Quality gate before the CRM sync: GX suites over master data, quarantine with steward-readable reasons.

Light at import time (the DAG file may import it): pandas and GX load inside ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from associate.exceptions import QuarantineGateError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from associate.models import HierarchyDefinition

__all__ = ["ValidationResult", "validate", "check_gate", "format_summary"]


@dataclass
class ValidationResult:
    """Valid rows, the quarantine, counts by check and where the Data Docs are."""

    customers: pd.DataFrame
    companies: pd.DataFrame
    quarantine: pd.DataFrame
    summary: pd.DataFrame
    data_docs: str | None
    input_rows: int = field(default=0)
    rejected_rows: int = field(default=0)

    def rejected_ratio(self) -> float:
        """Quarantined input rows / input rows (a row counts once, however many checks it failed)."""
        return self.rejected_rows / self.input_rows if self.input_rows else 0.0


def validate(customers: pd.DataFrame, companies: pd.DataFrame, hierarchies: list[HierarchyDefinition], *,
             run_id: str, now: datetime | None = None, suites_dir: str | Path | None = None,
             data_docs_dir: str | Path | None = None, phone_region: str | None = None) -> ValidationResult:
    """Check canonical customer and company frames; split them into valid rows and quarantine rows.

    ``phone_region`` (ISO alpha-2) reads national mobiles; valid rows carry mobiles as E.164 digits.
    """
    from associate.validation.gate import run_gate

    return ValidationResult(**run_gate(
        customers, companies, hierarchies, run_id=run_id, now=now,
        suites_dir=suites_dir, data_docs_dir=data_docs_dir, phone_region=phone_region,
    ))


def check_gate(result: ValidationResult, max_ratio: float) -> None:
    """Raise QuarantineGateError when the quarantined share of input rows is above ``max_ratio``."""
    ratio = result.rejected_ratio()
    if ratio <= max_ratio:
        return
    top = ", ".join(
        f"{row.entity}/{row.check}: {row.rows}" for row in result.summary.head(5).itertuples(index=False)
    )
    raise QuarantineGateError(
        f"quality gate failed: {result.rejected_rows} of {result.input_rows} input rows "
        f"({ratio:.1%}) were quarantined, above the allowed {max_ratio:.1%}. "
        f"Most frequent checks: {top}. Each row's reason is in the associate_quarantine table: fix the "
        f"rows at the source and run again, or trigger with a higher max_quarantine_ratio if they are expected."
    )


def format_summary(result: ValidationResult) -> str:
    """A compact text table of quarantine counts by entity and check, for the task log."""
    header = (f"quality gate: {result.rejected_rows} of {result.input_rows} input rows quarantined "
              f"({result.rejected_ratio():.2%}); valid: {len(result.customers)} customers, "
              f"{len(result.companies)} companies")
    if result.summary.empty:
        return header + "\n(no row failed any check)"
    rows = [(str(r.entity), str(r.check), str(r.rows)) for r in result.summary.itertuples(index=False)]
    titles = ("entity", "check", "rows")
    widths = [max(len(t), *(len(r[i]) for r in rows)) for i, t in enumerate(titles)]
    line = "  ".join("{:<%d}" % w for w in widths[:2]) + "  {:>%d}" % widths[2]
    body = [line.format(*titles), line.format(*("-" * w for w in widths))]
    body += [line.format(*r) for r in rows]
    if result.data_docs:
        body.append(f"Data Docs: {result.data_docs}")
    return "\n".join([header, *body])

"""A run's staged outcomes, as the tasks after ``post`` read them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def run_outcomes(run_id: str, company_outcomes: str, customer_outcomes: list[str] | None,
                 columns: Iterable[str] | None = None) -> list:
    """Every staged outcome frame of a run: companies, held-back customers, sent customers (only ``columns``)."""
    from associate import staging

    frames = [staging.read_frame(company_outcomes, columns)]
    held = staging.run_path(run_id, "outcomes", "held_back.parquet")
    if held.exists():
        frames.append(staging.read_frame(held, columns))
    frames += [staging.read_frame(uri, columns) for uri in all_values(customer_outcomes) if uri]
    return frames


def all_values(values: Any) -> list:
    """Every value of a mapped task's output, read in one request.

    Airflow hands a downstream task a lazy sequence; iterating it asks for one item past
    the end, which the task SDK logs as ``[error] XCom not found``. A slice is one read
    and asks for nothing that is not there. (A ``post`` mapped over no chunk has none.)
    """
    if values is None or not len(values):
        return []
    return list(values[:])

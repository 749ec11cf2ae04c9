"""The quality gate: derive, validate with GX, quarantine failures and their dependents, split valid rows."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from associate import config, staging, tables
from associate.validation import derive, graph, quarantine
from associate.validation.gx_runner import SuiteRunner

log = logging.getLogger(__name__)

CUSTOMER_SUITE = "customers"
COMPANY_SUITE = "companies"
QUARANTINE_COLUMNS = tables.OUTPUT_TABLES[tables.QUARANTINE_TABLE]


def _utc(now: datetime | None) -> pd.Timestamp:
    stamp = pd.Timestamp(now or datetime.now(timezone.utc))
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def run_gate(customers: pd.DataFrame, companies: pd.DataFrame, hierarchies, *, run_id: str,
             now: datetime | None = None, suites_dir=None, data_docs_dir=None,
             phone_region: str | None = None) -> dict:
    """Everything ``validate`` returns, as a dict of ValidationResult fields."""
    started = time.perf_counter()
    now_utc = _utc(now)
    index = derive.HierarchyIndex(hierarchies)
    comp = derive.prepare_companies(companies, index)
    cust = derive.prepare_customers(customers, comp, index, phone_region)
    prepared = time.perf_counter()

    runner = SuiteRunner(Path(suites_dir) if suites_dir else config.expectations_dir(), data_docs_dir,
                         run_name=staging.safe_name(run_id))
    # GX stores the parameters with the results, so they must serialise: ISO text compares fine.
    parameters = {"now": now_utc.isoformat()}
    comp_failures = runner.run(tables.ENTITY_COMPANY, COMPANY_SUITE, comp, parameters)
    cust_failures = runner.run(tables.ENTITY_CUSTOMER, CUSTOMER_SUITE, cust, parameters)
    docs = runner.build_data_docs()
    validated = time.perf_counter()

    comp_rows = quarantine.failure_rows(tables.ENTITY_COMPANY, comp, "company_external_id",
                                        comp_failures, parameters)
    comp_rows = pd.concat([comp_rows, _company_dependents(comp, comp_rows)], ignore_index=True)
    cust_rows = quarantine.failure_rows(tables.ENTITY_CUSTOMER, cust, "customer_key",
                                        cust_failures, parameters)
    held_companies = set(comp["company_external_id"].iloc[comp_rows["pos"].unique()].dropna())
    by_company = _customers_of_rejected_companies(cust, held_companies)
    cust_rows = pd.concat([cust_rows, by_company], ignore_index=True)
    cust_rows = pd.concat([cust_rows, _customer_dependents(cust, cust_rows, by_company)], ignore_index=True)

    del runner  # the GX context and its stored results are no longer needed
    _keep_output_columns(cust, tables.CUSTOMER_COLUMNS)
    _keep_output_columns(comp, tables.COMPANY_COLUMNS)
    rows = pd.concat([comp_rows, cust_rows], ignore_index=True)
    rows["run_id"] = run_id
    rows["quarantined_at"] = now_utc
    quarantine_frame = (
        rows.sort_values(["entity", "entity_key", "check"], kind="stable")[list(QUARANTINE_COLUMNS)]
        .reset_index(drop=True)
    )
    summary = (
        rows.groupby(["entity", "check"], as_index=False).size().rename(columns={"size": "rows"})
        .sort_values(["rows", "entity", "check"], ascending=[False, True, True]).reset_index(drop=True)
    )
    bad_comp = np.zeros(len(comp), dtype=bool)
    bad_comp[comp_rows["pos"].to_numpy(dtype=np.int64)] = True
    bad_cust = np.zeros(len(cust), dtype=bool)
    bad_cust[cust_rows["pos"].to_numpy(dtype=np.int64)] = True
    log.info(
        "quality gate: %d of %d customers and %d of %d companies quarantined "
        "(derive %.1fs, GX %.1fs, total %.1fs)",
        bad_cust.sum(), len(cust), bad_comp.sum(), len(comp),
        prepared - started, validated - prepared, time.perf_counter() - started,
    )
    return {
        "customers": _valid_customers(customers, cust, bad_cust),
        "companies": _valid_companies(companies, comp, bad_comp),
        "quarantine": quarantine_frame,
        "summary": summary[["entity", "check", "rows"]],
        "data_docs": docs,
        "input_rows": len(cust) + len(comp),
        "rejected_rows": int(bad_cust.sum() + bad_comp.sum()),
    }


def _keep_output_columns(frame: pd.DataFrame, canonical: tuple[str, ...]) -> None:
    """Drop derived columns the valid frames do not use, to lower the peak memory at 1M rows."""
    wanted = set(canonical) | {f"{c}__ts" for c in canonical} | {f"{c}__num" for c in canonical} | {"mobile__norm"}
    for column in [c for c in frame.columns if c not in wanted]:
        del frame[column]


def _held(rows: pd.DataFrame, n: int) -> np.ndarray:
    held = np.zeros(n, dtype=bool)
    held[rows["pos"].to_numpy(dtype=np.int64)] = True
    return held


def _dependency_reasons(keys: pd.Series, parent: np.ndarray, root: np.ndarray,
                        positions: np.ndarray, noun: str) -> list[str]:
    directs = keys.iloc[parent[positions]].to_numpy(dtype=object)
    origins = keys.iloc[root[positions]].to_numpy(dtype=object)
    reasons = []
    for pos, direct, origin in zip(positions, directs, origins):
        if parent[pos] == root[pos]:
            reasons.append(f"held back because its {noun} {direct} is quarantined")
        else:
            reasons.append(f"held back because its {noun} {direct} depends on {origin}, which is quarantined")
    return reasons


def _company_dependents(comp: pd.DataFrame, comp_rows: pd.DataFrame) -> pd.DataFrame:
    """Companies under a rejected holding company, transitively."""
    parent = comp.attrs["parent_pos"]
    reached, root = graph.descendants(parent, _held(comp_rows, len(comp)))
    positions = np.flatnonzero(reached & ~comp.attrs["cyclic"])
    keys = comp["company_external_id"]
    return quarantine.dependent_rows(
        tables.ENTITY_COMPANY, comp, "company_external_id", "parent_company_rejected",
        "parent_company_external_id", positions,
        _dependency_reasons(keys, parent, root, positions, "holding company"),
    )


def _customers_of_rejected_companies(cust: pd.DataFrame, held_companies: set) -> pd.DataFrame:
    company = cust["company_external_id"]
    positions = np.flatnonzero(np.array(company.isin(held_companies), dtype=bool))
    reasons = [f"held back because its company {c} is quarantined"
               for c in company.iloc[positions].to_numpy(dtype=object)]
    return quarantine.dependent_rows(tables.ENTITY_CUSTOMER, cust, "customer_key", "company_rejected",
                                     "company_external_id", positions, reasons)


def _customer_dependents(cust: pd.DataFrame, cust_rows: pd.DataFrame,
                         by_company: pd.DataFrame) -> pd.DataFrame:
    """Customers under a rejected parent, transitively (unless already held for their company)."""
    parent = cust.attrs["parent_pos"]
    reached, root = graph.descendants(parent, _held(cust_rows, len(cust)))
    skip = cust.attrs["cyclic"] | _held(by_company, len(cust))
    positions = np.flatnonzero(reached & ~skip)
    keys = cust["customer_key"]
    return quarantine.dependent_rows(
        tables.ENTITY_CUSTOMER, cust, "customer_key", "parent_rejected", "parent_customer_key",
        positions, _dependency_reasons(keys, parent, root, positions, "parent customer"),
    )


def _valid_customers(original: pd.DataFrame, cust: pd.DataFrame, bad: np.ndarray) -> pd.DataFrame:
    keep = ~bad
    out = cust.loc[keep, [c for c in tables.CUSTOMER_COLUMNS]].copy()
    for column in derive.CUSTOMER_TIMESTAMPS:
        out[column] = cust.loc[keep, f"{column}__ts"]
    out["last_viewed_date"] = cust.loc[keep, "last_viewed_date__ts"].dt.date.astype(object).where(
        cust.loc[keep, "last_viewed_date__ts"].notna(), None)
    for column in derive.CUSTOMER_INTS:
        out[column] = cust.loc[keep, f"{column}__num"].astype("Int64")
    # Handed over as E.164 digits: the payload sends them, and its hash (change detection)
    # does not move when the warehouse only reformats a number.
    out["mobile"] = cust.loc[keep, "mobile__norm"]
    if tables.CUSTOMER_PUSH_TOKEN in original.columns:  # optional: passed through as given
        token = original[tables.CUSTOMER_PUSH_TOKEN].astype(object).to_numpy()[np.asarray(keep, dtype=bool)]
        out[tables.CUSTOMER_PUSH_TOKEN] = token
    out.index = original.index[keep]
    return out


def _valid_companies(original: pd.DataFrame, comp: pd.DataFrame, bad: np.ndarray) -> pd.DataFrame:
    keep = ~bad
    out = comp.loc[keep, [c for c in tables.COMPANY_COLUMNS]].copy()
    out["updated_at"] = comp.loc[keep, "updated_at__ts"]
    out.index = original.index[keep]
    return out

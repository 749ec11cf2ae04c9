"""Run the JSON expectation suites with GX Core on prepared frames; map failures to row positions."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import logging
import sys
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from associate import heap
from associate.exceptions import SuiteError

log = logging.getLogger(__name__)

DATA_DOCS_SITE = "associate_quarantine_docs"
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    # The index query spells out every failing index as text: useless here and slow at scale.
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
REQUIRED_META = ("check", "column", "reason")
# GX imports these at import time for expectations and metrics our suites do not use (the
# KL-divergence expectation and its chart, two KS-test metrics): about 40 % of importing GX.
DEFERRED_MODULES = ("scipy.stats", "altair")
# Per-row lists of a COMPLETE result: we read the indexes from the result GX returns; the
# Data Docs show counts only (no samples: partial_unexpected_count 0), so the stored copy
# the Data Docs render from goes without them.
ROW_LISTS = ("unexpected_list", "unexpected_index_list")


@dataclass(frozen=True)
class Failure:
    """One failed expectation: the check it stands for and the row positions that failed it."""

    check: str
    column: str
    reason: str
    kwargs: dict
    positions: np.ndarray = field(repr=False)


def load_suite_json(suites_dir: Path, name: str) -> dict:
    """Read and check one suite file: every expectation needs meta check/column/reason."""
    path = Path(suites_dir) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SuiteError(f"expectation suite {path} not found: set [associate] expectations_dir to the folder "
                         f"that holds customers.json and companies.json") from exc
    except ValueError as exc:
        raise SuiteError(f"expectation suite {path} is not valid JSON: {exc}") from exc
    expectations = data.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(f"expectation suite {path} has no expectations")
    checks = []
    for number, exp in enumerate(expectations, 1):
        meta = exp.get("meta") or {}
        missing = [k for k in REQUIRED_META if not meta.get(k)]
        if missing:
            raise SuiteError(f"{path}: expectation #{number} ({exp.get('type')}) lacks meta {missing}")
        checks.append(meta["check"])
    data["name"] = data.get("name") or name
    return data


def _group_by_columns(expectations: list[dict]) -> dict[tuple[str, ...], list[int]]:
    """Positions of the expectations, keyed by the columns they read, in file order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for position, exp in enumerate(expectations):
        kwargs = exp.get("kwargs") or {}
        columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
        columns += list(kwargs.get("column_list") or [])
        groups.setdefault(tuple(dict.fromkeys(columns)), []).append(position)
    return groups


def _merged_result(suite, entity: str, parts: list):
    """One suite's result from the results of its parts, in the suite's expectation order."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    results = [item for part in parts for item in part.results]
    statistics = calc_validation_statistics(results)
    meta = dict(parts[0].meta) if parts else {}
    # The Data Docs title the page with the batch's data asset; every part's batch is the entity's rows.
    meta["batch_spec"] = {**(meta.get("batch_spec") or {}), "data_asset_name": entity}
    return ExpectationSuiteValidationResult(
        results=results,
        success=statistics.success,
        suite_name=suite.name,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=meta,
        batch_id=suite.name,
    )


def _store_without_row_lists(store) -> None:
    """Make ``store`` keep results without their per-row lists (JSON of every failing row's value and index).

    At 1M rows serialising those lists into the in-memory store, and reading them back for
    the Data Docs, cost more than validating.
    """
    serialize = store.serialize

    def serialize_without_row_lists(value):
        taken = []
        for item in value.results:
            if item.result:
                taken.append((item.result, {k: item.result.pop(k) for k in ROW_LISTS if k in item.result}))
        try:
            return serialize(value)
        finally:
            for result, lists in taken:
                result.update(lists)

    store.serialize = serialize_without_row_lists


class _Deferred(types.ModuleType):
    """Stands in for a module while GX imports; the module itself loads on first attribute access."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(self.__name__), name)


def import_gx() -> types.ModuleType:
    """Import GX without its unused heavy dependencies and without cyclic GC passes."""
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        # GX narrates its import (hundreds of "Skipping registering function" lines) and every
        # data source it registers at INFO: noise in task logs. Set before the import, which logs.
        gx_log.setLevel(logging.WARNING)
    heap.skip_collection_at_exit()  # GX's ~300,000 objects make the process's exit ~2 s slower
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"]
    deferred = [name for name in DEFERRED_MODULES
                if name not in sys.modules and importlib.util.find_spec(name) is not None]
    for name in deferred:
        sys.modules[name] = _Deferred(name)
    # Importing GX builds thousands of classes; the collector's passes over them find nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        import great_expectations
    finally:
        if collecting:
            gc.enable()
        # GX's modules keep the stand-ins; anyone else importing these gets the real module.
        for name in deferred:
            if sys.modules.get(name).__class__ is _Deferred:
                del sys.modules[name]
    return great_expectations


class SuiteRunner:
    """An ephemeral GX context: each suite runs in column groups through GX's Validator, merged into one result."""

    def __init__(self, suites_dir: Path, data_docs_dir: Path | None = None, run_name: str | None = None) -> None:
        gx = import_gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        from great_expectations.execution_engine import pandas_execution_engine

        self._gx = gx
        # GX fingerprints every pandas batch under 1 GB (an md5 over a row hash of the whole
        # frame) only to label it in the result's batch markers; we never read that label,
        # and at 1M rows it cost a quarter of the gate's time.
        pandas_execution_engine.HASH_THRESHOLD = 0
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        # An ephemeral context still renders its whole config as YAML into its in-memory
        # store after every source, suite and definition we add or drop (hundreds of times
        # a run, ~10 % of the gate at 1M rows); nothing ever reads that copy back.
        self.context._save_project_config = lambda: None
        _store_without_row_lists(self.context.validation_results_store)
        self.suites_dir = Path(suites_dir)
        self.run_name = run_name
        self.data_docs_dir = Path(data_docs_dir) if data_docs_dir else None
        if self.data_docs_dir:
            self.data_docs_dir.mkdir(parents=True, exist_ok=True)
            self.context.add_data_docs_site(
                site_name=DATA_DOCS_SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(self.data_docs_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )

    def run(self, entity: str, suite_name: str, frame: pd.DataFrame, parameters: dict) -> list[Failure]:
        """Validate ``frame`` (RangeIndex) against a suite; one Failure per failed expectation."""
        data = load_suite_json(self.suites_dir, suite_name)
        gx = self._gx
        suite = gx.ExpectationSuite(name=suite_name, expectations=data["expectations"], meta=data.get("meta"))
        if len(suite.expectations) != len(data["expectations"]):
            # GX only logs expectations it cannot build; a silently shorter gate is worse than none.
            built = {e.meta.get("check") for e in suite.expectations}
            bad = [e["meta"]["check"] for e in data["expectations"] if e["meta"]["check"] not in built]
            raise SuiteError(f"{suite_name}.json: not valid GX expectation(s) (unknown type or bad kwargs): {bad}")
        groups = _group_by_columns(data["expectations"])
        missing = sorted({c for cols in groups for c in cols} - set(frame.columns))
        if missing:
            raise SuiteError(f"{suite_name}.json refers to unknown column(s) {missing}")
        # GX copies the whole batch frame for every metric that filters rows, so a wide
        # frame costs expectations x columns x rows: each group of expectations gets a
        # batch of just the columns it reads (same rows, same index). Measured faster at
        # every size, from 300 rows to 1M.
        results = [
            self._run_part(entity, f"{suite_name}.{'+'.join(columns)}",
                           [suite.expectations[i] for i in positions], frame[list(columns)], parameters)
            for columns, positions in groups.items()
        ]
        merged = _merged_result(suite, entity, results)
        if self.data_docs_dir:
            self._store(suite, merged)
        return self._failures(suite_name, merged)

    def _run_part(self, entity: str, part: str, expectations: list, frame: pd.DataFrame, parameters: dict):
        from great_expectations.validator.v1_validator import Validator

        # One data source per batch, dropped after the run: GX caches batch data and metrics
        # on the source's execution engine, which would keep every batch alive (GBs at 1M rows).
        source = self.context.data_sources.add_pandas(f"associate:{part}")
        batch = source.add_dataframe_asset(name=entity).add_batch_definition_whole_dataframe("all_rows")
        try:
            # The Validator, not a ValidationDefinition: a part's result is merged into its
            # suite's before anything is stored (one Data Docs page per suite, not per part).
            validator = Validator(batch_definition=batch, batch_parameters={"dataframe": frame},
                                  result_format=RESULT_FORMAT)
            part_suite = self._gx.ExpectationSuite(name=part, expectations=expectations)
            return validator.validate_expectation_suite(part_suite, parameters)
        finally:
            self.context.data_sources.delete(source.name)

    def _store(self, suite, result) -> None:
        """Keep the suite and its merged result where the Data Docs site reads them."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        self.context.suites.add(suite)
        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        run_time = datetime.now(timezone.utc)
        result.meta["run_id"] = RunIdentifier(run_name=self.run_name, run_time=run_time)
        result.meta["validation_time"] = run_time
        self.context.validation_results_store.store_validation_results(
            suite_validation_result=result,
            suite_validation_result_identifier=ValidationResultIdentifier(
                expectation_suite_identifier=suite_id, run_id=result.meta["run_id"],
                # The page's file name: no ':' (a URL segment, a file on any object store).
                batch_identifier=suite.name,
            ),
            expectation_suite_identifier=suite_id,
        )

    @staticmethod
    def _failures(suite_name: str, result) -> list[Failure]:
        failures = []
        for item in result.results:
            config = item.expectation_config
            meta = config.meta or {}
            if item.exception_info and item.exception_info.get("raised_exception"):
                raise SuiteError(
                    f"{suite_name}: expectation {meta.get('check')} ({config.type}) raised: "
                    f"{item.exception_info.get('exception_message')}"
                )
            if item.success:
                continue
            positions = np.asarray(item.result.get("unexpected_index_list") or [], dtype=np.int64)
            failures.append(Failure(meta["check"], meta["column"], meta["reason"],
                                    dict(config.kwargs), positions))
        return failures

    def build_data_docs(self) -> str | None:
        """Build the Data Docs site (when configured); return the index path."""
        if not self.data_docs_dir:
            return None
        urls = self.context.build_data_docs(site_names=[DATA_DOCS_SITE])
        index = self.data_docs_dir / "index.html"
        log.info("Data Docs of the quality gate: %s", index)
        return str(index) if index.exists() else urls.get(DATA_DOCS_SITE)

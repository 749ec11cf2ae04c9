"""The dry-run preview: what a run would send, as counts and a small masked sample.

A person reads ``payload_preview.json``: how many payloads per method, change, depth and
company, and the first few payloads of each company and of each depth (capped in all),
mobiles and emails masked. Every payload is staged in Parquet (``dry_run_to_send.parquet``,
the format of ``to_send.parquet``) for whoever needs the full set; memory holds the
counts and the sample, never the payloads of the run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from associate.masking import mask_value

if TYPE_CHECKING:
    import pandas as pd

PREVIEW_NAME = "payload_preview.json"
STAGED_NAME = "dry_run_to_send.parquet"
# A sample a person reads: a few payloads of each company and each depth, a few hundred at most.
SAMPLES_PER_GROUP = 3
MAX_SAMPLES = 500
# Counts of the companies with the most payloads; the total number of companies is given too.
MAX_COMPANY_COUNTS = 100
NO_COMPANY = "(no company)"


def masked_payload(node: Any) -> Any:
    """A copy of a payload with mobiles and emails masked (identifiers, channels, fields named so)."""
    if isinstance(node, list):
        return [masked_payload(item) for item in node]
    if not isinstance(node, dict):
        return node
    kind = str(node.get("type", "")).lower()
    masked = {}
    for key, value in node.items():
        if key == "value" and kind in ("mobile", "email"):
            masked[key] = mask_value(kind, value)
        elif isinstance(value, str) and ("mobile" in key.lower() or "email" in key.lower()):
            masked[key] = mask_value(key.lower(), value)
        else:
            masked[key] = masked_payload(value)
    return masked


class PayloadSample:
    """Counts every payload it is shown and keeps the first few of each company and depth."""

    def __init__(self, *, per_group: int = SAMPLES_PER_GROUP, limit: int = MAX_SAMPLES):
        self.per_group, self.limit = per_group, limit
        self.total = 0
        self.by_method: Counter = Counter()
        self.by_change: Counter = Counter()
        self.by_depth: Counter = Counter()
        self.by_company: Counter = Counter()
        self.samples: list[dict[str, Any]] = []
        self._kept_of_company: Counter = Counter()
        self._kept_of_depth: Counter = Counter()

    def add(self, to_send: pd.DataFrame) -> None:
        """Count one frame of elements to send (``staged.TO_SEND``) and sample from it."""
        if to_send.empty:
            return
        import pandas as pd

        # Positional series: the frame's own index need not be unique or in order.
        companies = pd.Series(to_send["company_external_id"].fillna(NO_COMPANY).astype(str).to_numpy())
        depths = pd.Series(to_send["depth"].to_numpy())
        self.total += len(to_send)
        for counter, values in ((self.by_method, to_send["method"]), (self.by_change, to_send["change"]),
                                (self.by_depth, depths)):
            counter.update({_plain(k): int(n) for k, n in values.value_counts(dropna=False).items()})
        # Tens of thousands of companies a frame: their keys are text already, so no per-key
        # conversion (_plain per key was a fifth of a 1M dry run's change detection).
        counts = companies.value_counts()
        self.by_company.update(dict(zip(counts.index.tolist(), counts.tolist())))
        if len(self.samples) >= self.limit:
            return
        # Only the first rows of each group in this frame can be sampled: the rest never leave pandas.
        firsts = companies.groupby(companies, sort=False).head(self.per_group).index.union(
            depths.groupby(depths, sort=False).head(self.per_group).index)
        rows = to_send.iloc[firsts][["entity_key", "depth", "method", "change", "payload"]]
        for (key, depth, method, change, body), company in zip(rows.itertuples(index=False), companies.iloc[firsts]):
            depth = int(depth)
            if self._kept_of_company[company] >= self.per_group and self._kept_of_depth[depth] >= self.per_group:
                continue
            self._kept_of_company[company] += 1
            self._kept_of_depth[depth] += 1
            self.samples.append({"customer_key": str(key), "company_external_id": company, "depth": depth,
                                 "method": str(method), "change": str(change),
                                 "payload": masked_payload(json.loads(body))})
            if len(self.samples) >= self.limit:
                return

    def document(self, staged_uri: str) -> dict[str, Any]:
        """The preview as a JSON document: counts, where the full set is, the sample."""
        top = self.by_company.most_common(MAX_COMPANY_COUNTS)
        return {
            "payloads_to_send": self.total,
            "all_payloads": staged_uri,
            "counts": {
                "by_method": dict(sorted(self.by_method.items(), key=str)),
                "by_change": dict(sorted(self.by_change.items(), key=str)),
                "by_depth": {str(d): n for d, n in sorted(self.by_depth.items())},
                "companies": len(self.by_company),
                f"by_company (the {len(top)} with most payloads)": dict(top),
            },
            "sample": (f"the first {self.per_group} payloads of each company and of each depth, at most "
                       f"{self.limit} in all ({len(self.samples)} here); mobiles and emails masked"),
            "payloads": self.samples,
        }


class DryRunPreview:
    """A dry run's preview file and its staged full set; a context manager, written when the block succeeds."""

    def __init__(self, reports_dir: Path, staged_path: Any):
        from associate import staged, staging

        self.path = reports_dir / PREVIEW_NAME
        self.sample = PayloadSample()
        self._staged = staging.FrameWriter(staged_path, staged.TO_SEND.empty())
        self.staged_uri = self._staged.uri

    def __enter__(self) -> DryRunPreview:
        self._staged.__enter__()
        return self

    def add(self, to_send: pd.DataFrame) -> None:
        """Stage every payload of a frame, sample a few."""
        self._staged.write(to_send)
        self.sample.add(to_send)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._staged.__exit__(exc_type, exc, tb)
        if exc_type is None:
            document = self.sample.document(self.staged_uri)
            self.path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    """A count's key as JSON has it: numpy numbers as Python ones, missing as null."""
    import pandas as pd

    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value

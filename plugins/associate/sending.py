"""Sending one payload chunk: batches in order, independent ones side by side, one outcome row per customer.

Each batch is one ``send_customers`` call: POST (register) or PUT (update), with the
batch's ``source`` and ``account_id`` as query.

Each batch's outcome is staged as a part as soon as it is answered (a retried task
resumes after the last one) and, with a warehouse, recorded there in the same breath;
the chunk's outcome marks the rows recorded (``staged.RECORDED``), which ``write_back``
then leaves alone. Batches answered while the ones before them were being recorded are
recorded together, in one transaction (at most ``RECORD_GROUP_BATCHES``): when answers come
faster than a warehouse takes them, per-transaction costs stop adding up per batch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from associate import heap, json_codec, staged
from associate.masking import PiiMaskingFilter
from associate.tables import DEFAULT_SOURCE, ENTITY_CUSTOMER, METHOD_REGISTER, METHOD_UPDATE, STATUS_FAILED

if TYPE_CHECKING:
    import pandas as pd

    from associate.capillary.client import CapillaryClient
    from associate.hook import CapillaryHook
    from associate.warehouse import BatchRecorder

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())

# At most this many answered batches are recorded in one transaction. A retried task records
# the last this many parts again: only the last group may lack its recording.
RECORD_GROUP_BATCHES = 20


def write_api_time(client: CapillaryClient | None, run_id: str, name: str) -> dict[str, Any]:
    """Stage where a task's time with Capillary went (``timing/<name>.json``) and log it in one line.

    Keys: ``requests``, ``api_seconds`` (wall time inside requests, retries and backoff
    included), ``budget_wait_seconds`` (wall time blocked on the rate budget),
    ``api_wall_seconds`` (wall time in either, counted once: threads overlap), ``http_429``.
    Without a client (nothing to send) every figure is zero.
    """
    from associate import staging

    timing = client.api_time() if client is not None else {
        "api_seconds": 0.0, "budget_wait_seconds": 0.0, "api_wall_seconds": 0.0, "requests": 0, "http_429": 0}
    staging.write_json(timing, staging.run_path(run_id, "timing", f"{name}.json"))
    log.info("Capillary: %d requests, %.1f s in requests, %.1f s waiting for the rate budget",
             timing["requests"], timing["api_seconds"], timing["budget_wait_seconds"])
    return timing


def part_uri(outcome_uri: str, batch_no: int) -> str:
    """Return where the outcome of one batch is kept until the chunk is done (resume after a retry)."""
    return f"{outcome_uri}.parts/batch-{int(batch_no):05d}.parquet"


def send_payload_chunk(
    hook: CapillaryHook,
    payload_uri: str,
    outcome_uri: str,
    *,
    run_id: str,
    warehouse_conn_id: str | None = None,
    timing_name: str | None = None,
) -> str:
    """Send a payload chunk batch by batch (ascending ``batch_no``), stage the outcome, return its URI.

    With ``timing_name`` the chunk's time with Capillary is staged as ``timing/<timing_name>.json``.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from associate import staging

    frame = staging.read_frame(payload_uri)
    for column, default in (("method", METHOD_REGISTER), ("source", DEFAULT_SOURCE), ("account_id", None)):
        if column not in frame.columns:  # staged by an earlier version (or bench): registered, as then
            frame[column] = default
    staged.CHUNK.check(frame, payload_uri)
    batches = [(int(no), group) for no, group in frame.groupby("batch_no", sort=True)]
    done = {no for no, _ in batches if staging.exists(part_uri(outcome_uri, no))}
    pending = [(no, group) for no, group in batches if no not in done]
    if done:
        log.info("Resuming: %d of %d batches already have an outcome from an earlier try", len(done), len(batches))

    if warehouse_conn_id and batches:
        from associate.warehouse import BatchRecorder, ensure_output_tables

        ensure_output_tables(warehouse_conn_id)
        # One connection records every batch of the chunk, a transaction each.
        recording = BatchRecorder(warehouse_conn_id, run_id)
    else:
        recording = contextlib.nullcontext()
    client = hook.get_conn()
    progress = _Progress(total=len(batches), done=len(done), client=client)
    outcomes: dict[int, pd.DataFrame] = {no: _recorded_flag(staging.read_frame(part_uri(outcome_uri, no)))
                                         for no in sorted(done)}
    # Each batch makes frames that outlive a few collections: full ones would visit every
    # object of the task's imports too, ~0.5 s each (associate.heap).
    with heap.frozen(), recording as recorder, ThreadPoolExecutor(max_workers=client.settings.concurrency,
                                                                  thread_name_prefix="capillary") as pool:
        if recorder is not None and done:
            # A group's parts are written, then recorded, group after group, and a failed
            # recording stops the task: only the last group of an earlier try may lack its
            # recording. Recording again replaces rows by key, in batch order: harmless.
            last = sorted(done)[-RECORD_GROUP_BATCHES:]
            _record_batches(recorder, [outcomes[no] for no in last])
            for no in last:
                outcomes[no][staged.RECORDED] = True
        # Customers that failed in this chunk, by identifier: their children are held back.
        failed = _FailedParents()
        for no, group in batches:
            if no in done:
                failed.add(group, outcomes[no])

        def take(answered: list[tuple[int, pd.DataFrame, pd.DataFrame]]) -> None:
            for no, group, outcome in answered:
                outcomes[no] = outcome
                failed.add(group, outcome)
                # The part says whether its recording follows (parts come first: a task
                # killed before the group's transaction resumes after them and records them then).
                outcome[staged.RECORDED] = recorder is not None
                staging.write_frame(outcome, part_uri(outcome_uri, no))
            if recorder is not None:
                _record_batches(recorder, [outcome for _, _, outcome in answered])
            for no, _, outcome in answered:
                progress.batch_done(no, outcome)

        # Batches of one wave need no answer of one another, so they travel side by side as
        # soon as each is read; their outcomes are taken in batch order, while a group's
        # worth of batches waits for the senders (who would otherwise idle while a group is
        # recorded). A batch that needs an answer of its wave (its parent's) waits until the
        # wave is answered.
        waves, in_flight = _WaveSplitter(), deque()
        for no, group in pending:
            if waves.starts_wave(group):
                for answered in _answered_groups(in_flight, RECORD_GROUP_BATCHES, wait=True):
                    take(answered)
            in_flight.append((no, group, pool.submit(_send_batch, client, group, failed.held_back(group))))
            if sum(not future.done() for _, _, future in in_flight) >= RECORD_GROUP_BATCHES:
                for answered in _answered_groups(in_flight, RECORD_GROUP_BATCHES, wait=False):
                    take(answered)
        for answered in _answered_groups(in_flight, RECORD_GROUP_BATCHES, wait=True):
            take(answered)

    parts = [outcomes[no] for no, _ in batches]
    combined = (pd.concat(parts, ignore_index=True) if parts
                else staged.OUTCOMES.empty().assign(**{staged.RECORDED: pd.Series([], dtype=bool)}))
    uri = staging.write_frame(staged.typed_outcomes(combined), outcome_uri)
    if timing_name:
        write_api_time(client, run_id, timing_name)
    log.info("Chunk done: %d customers (%s); outcome %s", len(combined), staged.format_counts(combined["status"]), uri)
    return uri


def _recorded_flag(part: pd.DataFrame) -> pd.DataFrame:
    """A part of an earlier try with its ``recorded`` flag (a part staged without one counts as not recorded)."""
    if staged.RECORDED not in part.columns:
        part[staged.RECORDED] = False
    part[staged.RECORDED] = part[staged.RECORDED].fillna(False).astype(bool)
    return part


def _answered_groups(in_flight: deque, most: int, *, wait: bool):
    """Take answered batches off the front of ``in_flight`` in batch order, as lists of (batch_no, group, outcome).

    A list holds at most ``most``: the first batch (waited for with ``wait``, else only if
    answered) and the answered ones after it. With ``wait`` it goes on until nothing is
    in flight; without, it stops at the first batch not yet answered.
    """
    while in_flight and (wait or in_flight[0][2].done()):
        answered = []
        while in_flight and len(answered) < most:
            no, group, future = in_flight[0]
            if answered and (not future.done() or future.exception() is not None):
                break  # a failed send raises when it is taken, after the answers before it
            answered.append((no, group, future.result()))
            in_flight.popleft()
        yield answered


def _record_batches(recorder: BatchRecorder, outcomes: list[pd.DataFrame]) -> None:
    """Write answered batches' results, warnings and sync state to the warehouse (one transaction)."""
    from associate.reconcile import records_from_outcomes

    results, warnings, state = records_from_outcomes(outcomes, recorder.run_id)
    recorder.record(results=results, warnings=warnings, state=state)


class _Progress:
    """One log line per batch: done/total, customers/s, 429s, retries."""

    def __init__(self, *, total: int, done: int, client: CapillaryClient):
        self.total, self.done, self.client = total, done, client
        self.customers = 0
        self.started = time.monotonic()

    def batch_done(self, batch_no: int, outcome: pd.DataFrame) -> None:
        """Log one answered batch."""
        self.done += 1
        self.customers += len(outcome)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        stats = self.client.stats.snapshot()
        failed = int((outcome["status"] == STATUS_FAILED).sum())
        log.info(
            "Batch %d/%d (batch_no %d): %d customers, %d failed; %.1f customers/s; 429s %d, retries %d",
            self.done, self.total, batch_no, len(outcome), failed, self.customers / elapsed,
            stats["throttled"], stats["retries"],
        )


def _profile_identifiers(customer: Any) -> set[tuple[str, str]]:
    """Return the (type, value) identifiers of a customer object's profiles."""
    found: set[tuple[str, str]] = set()
    if isinstance(customer, dict):
        for profile in customer.get("profiles") or []:
            for ident in (profile or {}).get("identifiers") or []:
                found.add((str(ident.get("type")), str(ident.get("value"))))
    return found


def _details(element: Any) -> dict:
    details = element.get("associationDetails") if isinstance(element, dict) else None
    return details if isinstance(details, dict) else {}


def _references(element: Any) -> set[tuple[str, str]]:
    """Return the (type, value) identifiers an element names without registering them: its parent's, its children's."""
    details = _details(element)
    found = _profile_identifiers(details.get("parentCustomer"))
    for child in details.get("childCustomers") or []:
        found |= _profile_identifiers(child)
    return found


class _FailedParents:
    """The customers that failed in this chunk, by identifier, and the children to hold back for them.

    A child whose parent failed can only fail (the parent is missing or has no role), so it
    is not sent: it gets a failed outcome without a code, and the next run sends it after
    its parent (a failed state is retried; batches go in depth order). Its own children are
    then held back in turn. Keys are warehouse keys, never identifiers.
    """

    def __init__(self):
        self._key_of: dict[tuple[str, str], str] = {}

    def add(self, group: pd.DataFrame, outcome: pd.DataFrame) -> None:
        """Remember the customers of one batch's outcome that failed (payloads from its group)."""
        failed_keys = set(outcome.loc[outcome["status"] == STATUS_FAILED, "entity_key"].astype(str))
        if not failed_keys:
            return
        for key, payload in zip(group["entity_key"].astype(str), group["payload"]):
            if key in failed_keys:
                for identifier in _profile_identifiers(_parsed(payload)):
                    self._key_of.setdefault(identifier, key)

    def held_back(self, group: pd.DataFrame) -> dict[str, str]:
        """Return {child key: failed parent key} for the elements of a batch whose parent failed."""
        if not self._key_of:
            return {}
        held = {}
        for key, payload in zip(group["entity_key"].astype(str), group["payload"]):
            parent = _profile_identifiers(_details(_parsed(payload)).get("parentCustomer"))
            parent_key = next((self._key_of[i] for i in sorted(parent) if i in self._key_of), None)
            if parent_key is not None:
                held[key] = parent_key
        return held


def _parsed(payload: Any) -> Any:
    try:
        return json_codec.loads(payload)
    except (TypeError, ValueError):
        return None


class _WaveSplitter:
    """Consecutive batches grouped while none needs another's answer; a batch that does starts a new wave.

    A batch waits for an earlier one when it names (as parent or child) a customer that
    one registers, or registers a customer that one names or registers too: parents are
    answered before their children are sent, and two requests never race to register the
    same customer. Batches that only name the same parent (siblings split over batches)
    travel side by side: the parent was answered in an earlier wave.
    """

    def __init__(self):
        self._registered: set[tuple[str, str]] = set()
        self._named: set[tuple[str, str]] = set()
        self._first = True

    def starts_wave(self, group: pd.DataFrame) -> bool:
        """Add the next batch; whether it starts a new wave (the first batch does)."""
        own: set[tuple[str, str]] = set()
        refs: set[tuple[str, str]] = set()
        for payload in group["payload"]:
            element = _parsed(payload)
            own |= _profile_identifiers(element)
            refs |= _references(element)
        new = self._first or bool((own | refs) & self._registered or own & self._named)
        if new:
            self._registered, self._named, self._first = set(), set(), False
        self._registered |= own
        self._named |= refs
        return new


def batch_call(group: pd.DataFrame) -> tuple[bool, str, str | None]:
    """(update, source, account_id) of one batch: PUT or POST, and the call's query.

    A batch holds one (depth, method, source, account_id) by construction (``chunking``).
    """
    import pandas as pd

    def first(column: str) -> str | None:
        if column not in group.columns or not len(group):
            return None
        # Plain values, not pandas operations: this runs once per batch, in the senders' threads.
        values = {v for v in group[column].tolist() if not (v is None or v is pd.NA or v != v)}
        if len(values) > 1:
            raise ValueError(f"batch {group['batch_no'].iloc[0]} mixes {column} values {sorted(map(str, values))}")
        value = next(iter(values), None)
        return None if value is None or value == "" else str(value)

    return first("method") == METHOD_UPDATE, first("source") or DEFAULT_SOURCE, first("account_id")


class _Row(NamedTuple):
    entity_key: Any
    payload: Any
    payload_hash: Any


def _send_batch(client: CapillaryClient, group: pd.DataFrame, held_back: dict[str, str] | None = None) -> pd.DataFrame:
    """Send one batch; return one outcome row per element, in order.

    ``held_back`` ({child key: parent key}) names elements not sent because their parent failed.
    """
    import pandas as pd

    from associate.capillary.outcomes import BulkOutcome

    held_back = held_back or {}
    rows = [_Row(*values) for values in zip(*(group[c].tolist() for c in ("entity_key", "payload", "payload_hash")))]
    update, source, account_id = batch_call(group)
    elements, sendable, results, associations = [], [], {}, {}
    for position, row in enumerate(rows):
        if str(row.entity_key) in held_back:
            results[position] = BulkOutcome(error_message=staged.parent_failed_message(held_back[str(row.entity_key)]))
            continue
        try:
            element = json_codec.loads(row.payload)
            if not isinstance(element, dict):
                raise ValueError("payload is not a JSON object")
        except (TypeError, ValueError) as exc:
            results[position] = BulkOutcome(error_message=f"payload is not valid JSON: {exc}")
            continue
        elements.append(element)
        sendable.append(position)
        associations[position] = staged.element_association(element)
    answered = client.send_customers(elements, update=update, source=source, account_id=account_id) if elements else []
    for position, outcome in zip(sendable, answered):
        results[position] = outcome

    now = pd.Timestamp.now(tz="UTC")
    records = []
    for position, row in enumerate(rows):
        outcome = results[position]
        payload_hash = row.payload_hash
        if getattr(outcome, "details_kept", False):
            # Registered already, with other details that a POST does not change: a hash
            # that never matches makes the next run send it again, as an update (PUT).
            payload_hash = staged.DETAILS_KEPT_PREFIX + str(row.payload_hash)
        record = staged.outcome_record(
            ENTITY_CUSTOMER, row.entity_key, outcome.status, capillary_id=outcome.capillary_id,
            error_code=outcome.error_code, error_message=outcome.error_message, attempts=outcome.attempts,
            synced_at=now, payload_hash=payload_hash, warnings=outcome.warnings,
            association=associations.get(position),
        )
        if record["status"] == STATUS_FAILED:
            log.warning("Customer %s failed: %s %s", record["entity_key"], record["error_code"], record["error_message"])
        records.append(record)
    return staged.outcome_frame(records)

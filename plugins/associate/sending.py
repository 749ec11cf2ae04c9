"""Sending one payload chunk: batches in order, independent ones side by side, one outcome row per customer.

Each batch is one ``send_customers`` call: POST (register) or PUT (update), with the
batch's ``source`` and ``account_id`` as query.

Answered batches are taken in groups, in batch order: a group's outcomes are staged as one
part (a retried task resumes after the batches it holds) and, with a warehouse, handed to
``associate.recording``, whose thread records them there while the senders go on; the
chunk's outcome marks the rows recorded (``staged.RECORDED``), which ``write_back`` then
leaves alone. A group holds the first batch not yet taken and the ones answered within
``RECORD_GROUP_SECONDS`` of it, at most ``RECORD_GROUP_BATCHES``: framing and staging
cost about as much for a hundred rows as for two thousand.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from associate import heap, json_codec, staged
from associate.masking import PiiMaskingFilter
from associate.tables import DEFAULT_SOURCE, ENTITY_CUSTOMER, METHOD_UPDATE, STATUS_FAILED

if TYPE_CHECKING:
    import pandas as pd

    from associate.capillary.client import CapillaryClient
    from associate.hook import CapillaryHook

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())

# At most this many answered batches are staged together (and handed over for recording).
RECORD_GROUP_BATCHES = 20
# A group takes the batches answered within this many seconds of its first: with a slow
# budget each batch is staged (and logged) soon after its answer.
RECORD_GROUP_SECONDS = 1.0
# Column of a staged part: the batch each outcome row belongs to.
PART_BATCH_NO = "batch_no"


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
    """Return where the outcomes of a group of batches starting at ``batch_no`` are kept until the chunk is done."""
    return f"{outcome_uri}.parts/batch-{int(batch_no):05d}.parquet"


def staged_parts(outcome_uri: str) -> dict[int, pd.DataFrame]:
    """The outcomes an earlier try of the chunk staged, by batch_no (parts written whole only)."""
    from airflow.sdk import ObjectStoragePath

    from associate import staging

    folder = ObjectStoragePath(f"{outcome_uri}.parts")
    if not folder.exists():
        return {}
    outcomes: dict[int, pd.DataFrame] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not (path.name.startswith("batch-") and path.name.endswith(".parquet")):
            continue  # a ``.partial`` file: its writer was killed before the rename
        part = staging.read_frame(str(path))
        if PART_BATCH_NO not in part.columns:  # staged when a part held one batch
            outcomes[int(path.name[len("batch-"):-len(".parquet")])] = part
            continue
        for no, rows in part.groupby(PART_BATCH_NO, sort=True):
            outcomes[int(no)] = rows.drop(columns=PART_BATCH_NO).reset_index(drop=True)
    return outcomes


def _stage_part(outcome_uri: str, answered: list[tuple[int, pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """Stage a group's outcomes as one part, named after its first batch; return the part."""
    import pandas as pd

    from associate import staging

    part = pd.concat([outcome.assign(**{PART_BATCH_NO: no}) for no, _, outcome in answered], ignore_index=True)
    staging.write_frame(part, part_uri(outcome_uri, answered[0][0]))
    return part


def _chunk_outcome_format() -> pd.DataFrame:
    """An empty chunk outcome: the outcome format and the ``recorded`` flag."""
    import pandas as pd

    return staged.OUTCOMES.empty().assign(**{staged.RECORDED: pd.Series([], dtype=bool)})


def send_payload_chunk(
    hook: CapillaryHook,
    payload_uri: str,
    outcome_uri: str,
    *,
    run_id: str,
    warehouse_conn_id: str | None = None,
    timing_name: str | None = None,
    rows: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> str:
    """Send a payload chunk batch by batch (ascending ``batch_no``), stage the outcome, return its URI.

    ``rows`` and ``batch_size``: the chunk is rows ``[start, stop)`` of ``payload_uri``
    (``associate.chunks``). With ``timing_name`` the chunk's time with Capillary is staged
    as ``timing/<timing_name>.json``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from associate import staging
    from associate.chunks import chunk_batches
    from associate.recording import BACKLOG_BATCHES, RecordingThread

    batch_nos, batches = chunk_batches(payload_uri, rows, batch_size)
    earlier = staged_parts(outcome_uri)
    done = {no for no in batch_nos if no in earlier}
    if done:
        log.info("Resuming: %d of %d batches already have an outcome from an earlier try", len(done), len(batch_nos))

    client = hook.get_conn()
    progress = _Progress(total=len(batch_nos), done=len(done), client=client)
    if warehouse_conn_id and batch_nos:
        from associate.warehouse import BatchRecorder, ensure_output_tables

        ensure_output_tables(warehouse_conn_id)
        # One thread records every group of the chunk, over one connection.
        recording = RecordingThread(BatchRecorder(warehouse_conn_id, run_id))
    else:
        recording = contextlib.nullcontext()
    outcomes = {no: _recorded_flag(earlier[no]) for no in sorted(done)}  # of an earlier try's batches
    statuses: Counter[str] = Counter()
    # The chunk's outcome is written group by group as answers are taken (it appears when
    # the block ends well): built at the end, it cost ~0.4 s a chunk of 120,000 customers
    # with no request in flight. Each batch makes frames that outlive a few collections:
    # full ones would visit every object of the task's imports too, ~0.5 s each (associate.heap).
    with staging.FrameWriter(outcome_uri, _chunk_outcome_format()) as chunk_outcome, heap.frozen(), \
            recording as recorder, ThreadPoolExecutor(max_workers=client.settings.concurrency,
                                                      thread_name_prefix="capillary") as pool:
        # Customers that failed in this chunk, by identifier: their children are held back.
        failed = _FailedParents()

        last = sorted(done)[-(BACKLOG_BATCHES + RECORD_GROUP_BATCHES):] if recorder is not None else []
        for no in last:
            # Parts are staged before they are handed over for recording: only the last
            # batches of an earlier try may lack their recording. Recording again replaces
            # rows by key, in batch order: harmless.
            outcomes[no][staged.RECORDED] = True
        for no in sorted(done):
            chunk_outcome.write(staged.typed_outcomes(outcomes[no]))
            statuses.update(outcomes[no]["status"].tolist())
        if last:  # after the outcome is written: from here on the recording thread reads these frames
            recorder.put([outcomes[no] for no in last])

        def take(answered: list[tuple[int, pd.DataFrame, pd.DataFrame]]) -> None:
            for no, group, outcome in answered:
                failed.add(group, outcome)
                # The part says whether its recording follows (the part comes first: a task
                # killed before the group's transaction resumes after it and records it then).
                outcome[staged.RECORDED] = recorder is not None
            if recorder is not None:
                recorder.wait_for_room()
            part = _stage_part(outcome_uri, answered)
            chunk_outcome.write(part)
            statuses.update(part["status"].tolist())
            for no, _, outcome in answered:
                progress.batch_done(no, outcome)
            if recorder is not None:
                # Last: from here on the recording thread reads these frames.
                recorder.put([outcome for _, _, outcome in answered])

        # Batches of one wave need no answer of one another, so they all travel side by side
        # (as many at once as the connection's concurrency); their outcomes are taken in
        # batch order, group by group, while the senders go on. A batch that needs an answer
        # of its wave (its parent's) waits until the wave is answered.
        waves, in_flight = _WaveSplitter(), deque()
        try:
            for no, group in batches:
                if no in done:  # an earlier try's: its failures still hold children back
                    failed.add(group, outcomes[no])
                    continue
                if waves.starts_wave(group):
                    for answered in _answered_groups(in_flight, RECORD_GROUP_BATCHES, RECORD_GROUP_SECONDS):
                        take(answered)
                in_flight.append((no, group, pool.submit(_send_batch, client, group, failed.held_back(group))))
            for answered in _answered_groups(in_flight, RECORD_GROUP_BATCHES, RECORD_GROUP_SECONDS):
                take(answered)
        except BaseException:
            # The wave's batches are all queued: a failure no retry fixes sends none of the rest.
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    uri = chunk_outcome.uri
    if timing_name:
        write_api_time(client, run_id, timing_name)
    log.info("Chunk done: %d customers (%s); outcome %s", sum(statuses.values()), staged.format_counts(statuses.elements()),
             uri)
    return uri


def _recorded_flag(part: pd.DataFrame) -> pd.DataFrame:
    """A part of an earlier try with its ``recorded`` flag (a part staged without one counts as not recorded)."""
    if staged.RECORDED not in part.columns:
        part[staged.RECORDED] = False
    part[staged.RECORDED] = part[staged.RECORDED].fillna(False).astype(bool)
    return part


def _answered_groups(in_flight: deque, most: int, linger: float):
    """Take every batch off ``in_flight`` in batch order, as lists of (batch_no, group, outcome).

    A list holds the first batch left (waited for) and the batches after it answered within
    ``linger`` seconds of it, at most ``most``. A failed send raises when it is taken, after
    the answers before it.
    """
    from concurrent.futures import wait

    while in_flight:
        answered: list[tuple[int, Any, Any]] = []
        deadline = 0.0
        while in_flight and len(answered) < most:
            no, group, future = in_flight[0]
            if answered:
                wait([future], timeout=max(0.0, deadline - time.monotonic()))
                if not future.done() or future.exception() is not None:
                    break
            answered.append((no, group, future.result()))
            in_flight.popleft()
            if len(answered) == 1:
                deadline = time.monotonic() + linger
        yield answered


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

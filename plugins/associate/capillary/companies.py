"""Fleet companies: one write per new or changed company, holding companies before their subsidiaries.

The sync state says which companies were created before (``known_ids``): a company it
knows is updated (PUT), any other is created (POST). A GET is only sent to settle an
ambiguous answer:

- POST answered "already exists" (``1702``): the state was lost, or an earlier POST was
  stored but its answer lost. GET tells its id, hierarchy and whether it is active; a PUT
  follows only when its name or extendedFields differ.
- PUT answered "missing" (``1704``): Capillary lost it (or the state is of another
  cluster). It is created by POST (a ``1702`` then goes as above).
- No answer after the transport's retries (timeouts, 5xx): GET says whether the write
  landed; a missing company is POSTed, a differing one PUT.

Answers are decided by code, whatever the HTTP status (400, 404, 500, or 200 with ``errors``).
Companies are sent side by side, ``concurrency`` threads within the shared rate budget,
holding companies first (a holding company is depth 0, its subsidiaries 1, ...): a
subsidiary is sent as soon as its own holding company is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from associate.capillary import endpoints
from associate.capillary.outcomes import (
    CREATED, FAILED, UNCHANGED, UPDATED, CallResult, CompanyOutcome, int_or_none, messages,
)
from associate.capillary.transport import Transport
from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import PiiMaskingFilter
from associate.models import Codes

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


INACTIVE_WARNING = {"code": Codes.COMPANY_INACTIVE,
                    "message": "Fleet company is inactive in Capillary: customers cannot be associated with it"}
# A progress line at least every this many companies (and at the end of each depth).
PROGRESS_EVERY = 50


def _parent_of(request: Mapping[str, Any]) -> str | None:
    return (request.get("parentCompany") or {}).get("externalId")


def _inactive(company: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The inactive-company warning when an answer says ``isActive: false``."""
    # A deleted company stays, inactive: every customer sent to it would be refused (1705).
    return [dict(INACTIVE_WARNING)] if isinstance(company, Mapping) and company.get("isActive") is False else []


def _update_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body of a company request."""
    # parentCompany cannot be changed by PUT in the contract, so it is not sent. Missing
    # extendedFields are sent empty: a PUT without them would keep the old ones.
    update = {k: v for k, v in request.items() if k != "parentCompany"}
    update.setdefault("extendedFields", {})
    return update


class CompanyEnsurer:
    """Makes Capillary's fleet companies match their requests."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def ensure(self, companies: Iterable[Mapping[str, Any]],
               known_ids: Mapping[str, int | None] | None = None,
               answered: Callable[[CompanyOutcome], None] | None = None) -> list[CompanyOutcome]:
        """Create or update fleet companies, holding companies first; return one outcome per company.

        ``known_ids`` maps the external id of each company the sync state says was created
        to its Capillary id: those are updated (PUT), the others created (POST). ``answered``
        is called with each outcome as it is decided, in this thread.
        """
        from concurrent.futures import Future, ThreadPoolExecutor
        from queue import SimpleQueue

        known_ids = known_ids or {}
        requests_by_id: dict[str, dict[str, Any]] = {}
        for company in companies:
            request = {k: v for k, v in dict(company).items() if v is not None}
            external_id = str(request.get("externalId") or "")
            if not external_id:
                raise ValueError("every company needs an externalId (validation should have quarantined it)")
            if external_id in requests_by_id:
                log.warning("Company %s appears twice in the input; ensuring its first row only", external_id)
                continue
            requests_by_id[external_id] = request
        levels, outcomes = depth_levels(requests_by_id)
        progress = _Progress(len(requests_by_id), self.transport, [len(level) for level in levels])
        for outcome in outcomes.values():
            progress.add(outcome)
            if answered is not None:
                answered(outcome)
        # A subsidiary starts as soon as its own holding company is answered, not when its
        # whole depth is: the threads never idle at a depth's tail while others could go.
        depth_of = {external_id: depth for depth, level in enumerate(levels) for external_id in level}
        subsidiaries: dict[str, list[str]] = {}
        for level in levels:
            for external_id in level:
                parent = _parent_of(requests_by_id[external_id])
                if parent in depth_of:
                    subsidiaries.setdefault(parent, []).append(external_id)
        workers = max(1, int(self.transport.settings.concurrency))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capillary-company") as pool:
            running: dict[Future, str] = {}
            # Answers are taken as they come: waiting on the set of running futures costs a
            # pass over all of them per answer, quadratic with thousands of companies at one depth.
            answers: SimpleQueue[Future] = SimpleQueue()

            def start(external_id: str) -> None:
                parent = _parent_of(requests_by_id[external_id])
                if parent in outcomes and outcomes[parent].action == FAILED:
                    finish(external_id, CompanyOutcome(
                        external_id, FAILED, error_message=f"holding company {parent} could not be ensured"))
                    return
                future = pool.submit(self._ensure_one, requests_by_id[external_id], known_ids.get(external_id))
                running[future] = external_id
                future.add_done_callback(answers.put)

            def finish(external_id: str, outcome: CompanyOutcome) -> None:
                outcomes[external_id] = outcome
                progress.add(outcome, depth_of[external_id])
                if answered is not None:
                    answered(outcome)
                for subsidiary in subsidiaries.get(external_id, ()):
                    start(subsidiary)

            for external_id in levels[0] if levels else ():
                start(external_id)
            try:
                while running:
                    future = answers.get()
                    finish(running.pop(future), future.result())
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return [outcomes[key] for key in requests_by_id]

    # -- one company ----------------------------------------------------------------------------

    def _ensure_one(self, request: dict[str, Any], known_id: int | None) -> CompanyOutcome:
        """Update (PUT) a company the state knows, else create it (POST); GET only when an answer leaves it open."""
        outcome = CompanyOutcome(request["externalId"], FAILED)
        try:
            if known_id is not None:
                answer = self._send(outcome, "PUT", json_body=_update_body(request))
                if answer.failure:
                    return self._settle(outcome, request, UPDATED)
                if answer.ok:
                    return self._written(outcome, UPDATED, answer.body, fallback_id=known_id)
                if Codes.COMPANY_NOT_FOUND not in answer.codes:
                    raise self._refused(answer, "PUT", request)
                log.info("Company %s: the sync state knows it, Capillary does not (1704); creating it",
                         outcome.external_id)
            return self._create(outcome, request, settle_lost=True)
        except CapillaryAuthError:
            raise
        except CapillaryError as exc:
            outcome.action, outcome.error_code, outcome.error_message = FAILED, exc.code, str(exc)
            return outcome

    def _create(self, outcome: CompanyOutcome, request: dict[str, Any], *, settle_lost: bool) -> CompanyOutcome:
        """POST the company; reconcile it by GET when it exists already (1702) or the answer was lost."""
        answer = self._send(outcome, "POST", json_body=request)
        if answer.failure and settle_lost:
            return self._settle(outcome, request, CREATED)
        if answer.ok:
            return self._written(outcome, CREATED, answer.body)
        if Codes.COMPANY_EXISTS in answer.codes:
            existing = self._get(outcome)
            if existing is None:  # deleted between the two calls: nothing sure to say
                raise CapillaryError("POST answered 1702 (exists) but GET 1704 (missing)", code=Codes.COMPANY_NOT_FOUND)
            return self._reconcile(outcome, request, existing, UNCHANGED)
        raise answer.error(f"POST company {outcome.external_id}")

    def _settle(self, outcome: CompanyOutcome, request: dict[str, Any], intended: str) -> CompanyOutcome:
        """A write's answer was lost: GET says whether it landed; a missing company is POSTed once more."""
        log.info("Company %s: no answer to its %s; asking Capillary whether it was taken", outcome.external_id,
                 "POST" if intended == CREATED else "PUT")
        existing = self._get(outcome)
        if existing is None:
            return self._create(outcome, request, settle_lost=False)
        return self._reconcile(outcome, request, existing, intended)

    def _reconcile(self, outcome: CompanyOutcome, request: dict[str, Any], existing: Mapping[str, Any],
                   matched: str) -> CompanyOutcome:
        """Compare a fetched company with its request: ``matched`` when equal, else PUT."""
        outcome.company_id = int_or_none(existing.get("companyId"))
        stored_code = existing.get("hierarchyDefinitionCode")
        if stored_code and stored_code != request.get("hierarchyDefinitionCode"):
            outcome.error_code = Codes.HIERARCHY_UPDATE_NOT_ALLOWED
            outcome.error_message = (
                f"company is in hierarchy {stored_code} in Capillary, not {request.get('hierarchyDefinitionCode')}; "
                "a company's hierarchy cannot change"
            )
            return outcome
        inactive = _inactive(existing)
        if existing.get("name") == request.get("name") and (existing.get("extendedFields") or {}) == (
            request.get("extendedFields") or {}
        ):
            outcome.action, outcome.warnings = matched, inactive
            return outcome
        answer = self._send(outcome, "PUT", json_body=_update_body(request))
        if not answer.ok:
            raise self._refused(answer, "PUT", request)
        self._written(outcome, UPDATED, answer.body, fallback_id=outcome.company_id)
        outcome.warnings = inactive + [w for w in outcome.warnings if w not in inactive]
        return outcome

    # -- calls and answers ----------------------------------------------------------------------

    def _send(self, outcome: CompanyOutcome, method: str, *, json_body: Any = None) -> CallResult:
        """Send one company call by external id (POST without), its attempts added to the outcome."""
        params = None if method == "POST" else {"externalId": outcome.external_id}
        answer = self.transport.send(method, endpoints.COMPANIES, params=params, json_body=json_body)
        outcome.attempts += answer.attempts
        return answer

    def _get(self, outcome: CompanyOutcome) -> dict[str, Any] | None:
        """GET the company; None when Capillary has none (1704)."""
        answer = self._send(outcome, "GET")
        return answer.expect(f"GET company {outcome.external_id}", tolerate=(Codes.COMPANY_NOT_FOUND,))

    @staticmethod
    def _written(outcome: CompanyOutcome, action: str, body: Any, *, fallback_id: int | None = None) -> CompanyOutcome:
        """Fill the outcome of an answered POST or PUT."""
        body = body if isinstance(body, Mapping) else {}
        outcome.action = action
        outcome.company_id = int_or_none(body.get("companyId")) or fallback_id
        outcome.warnings = _inactive(body) + messages(body.get("warnings"))
        return outcome

    @staticmethod
    def _refused(answer: CallResult, method: str, request: Mapping[str, Any]) -> CapillaryError:
        """The error of a refused PUT, its message saying what a user can do about 1711 and 1705."""
        error = answer.error(f"{method} company {request.get('externalId')}")
        if Codes.HIERARCHY_UPDATE_NOT_ALLOWED in answer.codes:
            return CapillaryError(
                f"company is in another hierarchy in Capillary than {request.get('hierarchyDefinitionCode')}; "
                f"a company's hierarchy cannot change ({error})", status=answer.status,
                code=Codes.HIERARCHY_UPDATE_NOT_ALLOWED)
        if Codes.COMPANY_INACTIVE in answer.codes:
            # A PUT carries no parentCompany, so 1705 is about the company itself.
            return CapillaryError(f"{INACTIVE_WARNING['message']}; it cannot be updated ({error})",
                                  status=answer.status, code=Codes.COMPANY_INACTIVE)
        return error


class _Progress:
    """A log line every ``PROGRESS_EVERY`` companies and when the last company of a depth is answered."""

    def __init__(self, total: int, transport: Transport, per_depth: list[int] | None = None):
        self.total, self.transport = total, transport
        self.counts = {CREATED: 0, UPDATED: 0, UNCHANGED: 0, FAILED: 0}
        self.left = list(per_depth or [])
        self.started = time.monotonic()
        self.logged_at = 0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def add(self, outcome: CompanyOutcome, depth: int | None = None) -> None:
        """Count one outcome (of a company at ``depth``); log when a batch of companies or a depth is complete."""
        self.counts[outcome.action] = self.counts.get(outcome.action, 0) + 1
        if depth is not None:
            self.left[depth] -= 1
            if self.left[depth] == 0:
                self._log(f" (depth {depth} done)")
                return
        if self.done - self.logged_at >= PROGRESS_EVERY:
            self._log("")

    def _log(self, suffix: str) -> None:
        self.logged_at = self.done
        elapsed = max(time.monotonic() - self.started, 1e-6)
        stats = self.transport.stats.snapshot()
        log.info("Companies: %d/%d ensured (created %d, updated %d, unchanged %d, failed %d)%s; %.1f companies/s; "
                 "429s %d, retries %d", self.done, self.total, self.counts[CREATED], self.counts[UPDATED],
                 self.counts[UNCHANGED], self.counts[FAILED], suffix, self.done / elapsed, stats["throttled"],
                 stats["retries"])


def depth_levels(requests_by_id: Mapping[str, Mapping[str, Any]]) -> tuple[list[list[str]], dict[str, CompanyOutcome]]:
    """Return the companies by depth (holding companies first, in input order) and failed outcomes of cycles.

    A company whose parent is not among the requests (it exists already, or is missing and
    Capillary will say so) is depth 0.
    """
    ordered, cycles = parents_first(requests_by_id)
    depth: dict[str, int] = {}
    for external_id in ordered:  # a parent comes before its subsidiaries
        parent = _parent_of(requests_by_id[external_id])
        depth[external_id] = depth[parent] + 1 if parent in depth else 0
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for external_id in requests_by_id:
        if external_id in depth:
            levels[depth[external_id]].append(external_id)
    return levels, cycles


def parents_first(requests_by_id: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], dict[str, CompanyOutcome]]:
    """Return the companies ordered so a holding company comes before its subsidiaries, and failed outcomes of cycles."""
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(external_id: str, path: tuple[str, ...]) -> bool:
        if state.get(external_id) == "done":
            return True
        if external_id in path:
            return False
        parent = _parent_of(requests_by_id[external_id])
        if parent in requests_by_id and not visit(parent, path + (external_id,)):
            state[external_id] = "cycle"
            return False
        state[external_id] = "done"
        ordered.append(external_id)
        return True

    for external_id in requests_by_id:
        visit(external_id, ())
    cycles = {
        external_id: CompanyOutcome(external_id, FAILED, error_message="parentCompany chain forms a cycle")
        for external_id in requests_by_id if state.get(external_id) != "done"
    }
    return ordered, cycles

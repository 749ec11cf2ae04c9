"""Every error the pipeline raises, in one hierarchy.

``PermanentError`` is also Airflow's ``AirflowFailException``: a task that raises it fails
once, without the retries that could not fix it, and its message says what to do.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from associate.masking import mask_text


class AssociateError(Exception):
    """Base of the pipeline's errors."""


class PermanentError(AssociateError, AirflowFailException):
    """No retry can fix this: the task fails at once and the message says what to change."""


class ConfigurationError(PermanentError, ValueError):
    """A deployment setting or connection field is missing or malformed."""


class WarehouseError(AssociateError):
    """A warehouse query failed; the server may be back on the next try."""


class ExtractError(PermanentError, ValueError):
    """The extract SQL is missing or does not return the columns the pipeline needs."""


class SuiteError(PermanentError, ValueError):
    """An expectation suite file is missing, unreadable or not usable by the gate."""


class QuarantineGateError(PermanentError, ValueError):
    """Too many input rows were quarantined for the run to go on."""


class PayloadError(AssociateError, ValueError):
    """A row that cannot become an element (validation should have caught it)."""


class CapillaryError(AssociateError):
    """A Capillary call failed for good (after the retries it deserved)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(mask_text(message))
        self.status = status
        self.code = code


class CapillaryAuthError(CapillaryError, PermanentError):
    """Capillary refused the credentials: nothing else can work, so the task fails."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(f"{message}. Check the Capillary connection's till login and password (or OAuth key "
                         f"and secret) and that this till may call the API", status=status, code=code)


class CapillaryThrottled(AssociateError):
    """Capillary kept answering 429 beyond the task's bound on throttle waits (``max_throttle_wait``).

    Not a ``CapillaryError`` and not permanent: no customer is failed for it; the task's own
    Airflow retry resumes after the last batch whose outcome was staged.
    """

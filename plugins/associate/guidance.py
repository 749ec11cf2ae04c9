"""What a data steward does about each outcome code: the "what to do" of README's codes table.

One entry per code the report can show; README's "Statuses and codes" table says the same
(``tests/unit/test_guidance.py`` keeps them in step). ``NEEDS_ACTION`` are the codes no
edit of the warehouse alone can fix: a person acts in Capillary first.
"""

from __future__ import annotations

MOVE_IN_CAPILLARY = "move it in Capillary first, then send it with `customer_keys`"
WHAT_TO_DO: dict[str, str] = {
    "1626": MOVE_IN_CAPILLARY,
    "1627": MOVE_IN_CAPILLARY,
    "1628": MOVE_IN_CAPILLARY,
    "1616": "fix the company's `hierarchy_code` or the hierarchy in Capillary",
    "1610": "fix the company's `hierarchy_code` or the hierarchy in Capillary",
    "1615": "fix `role_code`",
    "1617": "fix `role_code` or `parent_customer_key`",
    "1618": "move children or raise the limit",
    "1625": "associate the parent first",
    "1608": "fix `parent_customer_key`",
    "1704": "check the company's row and its result",
    "1705": "check the company's row and its result",
    "1001": "fix the identifier",
    "1002": "fix the identifier",
    "1003": "fix the identifier",
    "1007": "add a mobile, email or external id",
    "1045": "add a mobile, email or external id",
    "1016": "resolve the duplicate",
    "1032": "resolve the duplicate",
    "1033": "resolve the duplicate",
    "1034": "fix `registered_at`",
    "91020": "fix `till_code`",
    "1060": "smaller `batch_size`; see the message",
    "400": "smaller `batch_size`; see the message",
    "500": "smaller `batch_size`; see the message",
}
NO_CODE_ACTION = "the message names the reason"
# Fixed in Capillary by a person (a move, a limit, an inactive company), not by the warehouse.
NEEDS_ACTION = frozenset({"1626", "1627", "1628", "1618", "1705"})


def what_to_do(code: object) -> str:
    """The steward's next step for a failed customer's code (None/NaN: a reason of the pipeline's own)."""
    if code is None or code != code or code == "":
        return NO_CODE_ACTION
    text = str(int(code)) if isinstance(code, float) else str(code)
    return WHAT_TO_DO.get(text, "see the message and Capillary's reference for this code")

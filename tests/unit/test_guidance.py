"""README's codes table and the report's "what to do" say the same."""

from __future__ import annotations

import re

from associate.guidance import NEEDS_ACTION, WHAT_TO_DO, what_to_do
from dag_support import ROOT


def readme_actions() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("### Statuses and codes", 1)[1].split("###", 1)[0]
    actions, last = {}, None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.match(r"^\d", cells[0]):
            continue
        action = last if cells[3] == "same" else cells[3]
        for code in re.findall(r"\d+", cells[0]):
            actions[code] = action
        last = action
    return actions


def test_every_failed_code_of_readme_has_the_same_action_in_the_report():
    readme = {code: action for code, action in readme_actions().items() if code != "8015"}
    ours = {code: action for code, action in WHAT_TO_DO.items() if code in readme}
    assert ours == {code: readme[code] for code in ours}
    assert set(readme) - {"8056", "8058", "91015", "91007", "19223", "1053"} <= set(WHAT_TO_DO)


def test_codes_arrive_as_text_numbers_or_nothing():
    assert what_to_do(1618.0) == what_to_do("1618") == "move children or raise the limit"
    assert what_to_do(None) == what_to_do(float("nan")) == "the message names the reason"
    assert NEEDS_ACTION <= set(WHAT_TO_DO)

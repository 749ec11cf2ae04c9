"""One mobile normaliser: what validation accepts is exactly what the payload sends and the sandbox matches."""

from __future__ import annotations

import json

import pandas as pd
import phonenumbers
from hypothesis import event, given, settings
from hypothesis import strategies as st

from associate import payload, tables
from associate.identifiers import is_valid_mobile, normalize_mobile
from associate.sandbox import rules
from associate.validation import phones

# libphonenumber's example mobile of every region: valid numbers from every numbering plan.
EXAMPLES = sorted(
    phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    for number in (phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
                   for region in phonenumbers.SUPPORTED_REGIONS)
    if number is not None
)
EDGES = ["", "  ", "+", "++919876544424", "+91 98765 44424", "91-9876544424", "(91)9876544424",
         "９１９８７６５４４４２４", "+٩١٩٨٧٦٥٤٤٤٢٤", "919876544424\n", "\t+919876544424 ", "919876544424.0",
         "²919876544424", "abc", "12345", "6834002", "+6834002"]
mobiles = st.one_of(
    st.sampled_from(EDGES),
    st.tuples(st.sampled_from(EXAMPLES), st.sampled_from(["", "+"]), st.sampled_from(["", " ", "\t"]))
    .map(lambda t: f"{t[2]}{t[1]}{t[0].lstrip('+')}{t[2]}"),
    st.text(alphabet="0123456789+ -", max_size=18),
)


def test_the_normaliser_keeps_digits_and_an_optional_plus_only():
    assert normalize_mobile(" +919876544424 ") == normalize_mobile("919876544424") == "919876544424"
    for value in (None, "", "  ", "+", "+91 98765 44424", "91-98765", "９１９８", "²9", "++91", "919876544424.0"):
        assert normalize_mobile(value) is None, value
    assert is_valid_mobile("6834002") and not is_valid_mobile("12345")


def _sent_mobiles(values: list[str]) -> dict[str, str | None]:
    """customer_key -> the mobile identifier the payload builder sends (None: none, or row left out)."""
    frame = pd.DataFrame({column: [None] * len(values) for column in tables.CUSTOMER_COLUMNS}, dtype=object)
    frame["customer_key"] = [f"C{i}" for i in range(len(values))]
    frame["mobile"], frame["email"], frame["loyalty_type"] = values, "x@example.com", "loyalty"
    built = payload.build_elements(frame, pd.DataFrame(columns=list(tables.COMPANY_COLUMNS)))
    sent: dict[str, str | None] = {}
    for key, body in zip(built["entity_key"], built["payload"]):
        identifiers = json.loads(body)["profiles"][0]["identifiers"]
        sent[key] = next((i["value"] for i in identifiers if i["type"] == "mobile"), None)
    return sent


@settings(max_examples=50)
@given(st.lists(mobiles, min_size=1, max_size=12))
def test_validation_payload_and_sandbox_agree(values):
    judged = phones.mobile_validity(pd.Series(values, dtype=object))
    sent = _sent_mobiles(values)
    checked = []
    for i, (value, norm, valid) in enumerate(zip(values, judged["norm"], judged["valid"])):
        assert norm == normalize_mobile(value)
        assert rules.normalize("mobile", value) == norm  # the key the sandbox stores and looks up
        if pd.notna(valid) and valid:
            checked.append(value)
            assert sent[f"C{i}"] == norm
            assert rules.is_valid("mobile", norm)
    event("valid mobiles checked" if checked else "no valid mobile drawn")  # --hypothesis-show-statistics

"""One mobile normaliser: what validation accepts is exactly what the payload sends and the sandbox matches."""

from __future__ import annotations

import json

import pandas as pd
import phonenumbers
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from associate import payload, tables
from associate.identifiers import default_region, e164_digits, is_valid_mobile, normalize_mobile, read_mobile
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
         "98765 43210", "0091 98765 43210", "(0) 98765 43210", "+9109876544424", "07911 123456", "8001234567",
         "９１９８７６５４４４２４", "+٩١٩٨٧٦٥٤٤٤٢٤", "919876544424\n", "\t+919876544424 ", "919876544424.0",
         "²919876544424", "abc", "12345", "6834002", "+6834002"]
mobiles = st.one_of(
    st.sampled_from(EDGES),
    st.tuples(st.sampled_from(EXAMPLES), st.sampled_from(["", "+"]), st.sampled_from(["", " ", "\t"]))
    .map(lambda t: f"{t[2]}{t[1]}{t[0].lstrip('+')}{t[2]}"),
    st.text(alphabet="0123456789+ -()", max_size=18),
)


def test_the_wire_form_is_e164_digits_with_an_optional_plus_only():
    # What validation hands over, the payload sends and the sandbox stores.
    assert e164_digits(" +919876544424 ") == e164_digits("919876544424") == "919876544424"
    for value in (None, "", "  ", "+", "+91 98765 44424", "91-98765", "９１９８", "²9", "++91", "919876544424.0"):
        assert e164_digits(value) is None, value
    assert is_valid_mobile("6834002") and not is_valid_mobile("12345")


@pytest.mark.parametrize(("value", "region", "digits"), [
    ("+91 98765-43210", None, "919876543210"),
    ("+91 98765-43210", "IN", "919876543210"),
    ("98765 43210", "IN", "919876543210"),
    ("98765-43210", "in", "919876543210"),
    ("0091 98765 43210", "IN", "919876543210"),  # India's international prefix
    ("(0) 98765 43210", "IN", "919876543210"),  # trunk prefix
    ("098765 43210", "IN", "919876543210"),
    ("+91 (0) 98765 43210", None, "919876543210"),
    ("+9109876543210", None, "919876543210"),  # trunk prefix after the country code is dropped
    ("91 98765 43210", None, "919876543210"),  # the contract's '+' is optional, separators too
    ("919876543210", "IN", "919876543210"),
    ("+919876543210", "GB", "919876543210"),
    ("447911123456", "IN", "447911123456"),  # E.164 digits of another country, no '+'
    ("07911 123456", "GB", "447911123456"),
    ("(201) 555-0123", "US", "12015550123"),
    ("0 6591234567", "IN", "916591234567"),  # the trunk prefix settles an ambiguous number
    ("９８７６５ ４３２１０", "IN", "919876543210"),  # full-width digits
])
def test_formatted_and_national_numbers_give_e164_digits(value, region, digits):
    assert normalize_mobile(value, default_region(region)) == digits
    assert is_valid_mobile(digits)


@pytest.mark.parametrize(("value", "region"), [
    ("98765 43210", None),  # national: without a region it cannot be read
    ("0091 98765 43210", None),  # an international prefix is a region's
    ("98765", "IN"),
    ("+91 98765", "IN"),
    ("441234", "IN"),
    ("12345", None),
])
def test_numbers_invalid_after_normalising_stay_invalid(value, region):
    digits = normalize_mobile(value, region)
    assert digits is None or not is_valid_mobile(digits)


def test_letters_extensions_and_blanks_are_no_number():
    for value in (None, "", "  ", "abc", "98765 43210 ext. 12", "tel:+919876543210", "1-800-FLOWERS", "+"):
        assert normalize_mobile(value, "IN") is None, value
        assert normalize_mobile(value) is None, value


def test_a_region_never_silently_changes_a_number_valid_without_one():
    # A customer already sent under its E.164 digits keeps them, or is held back as
    # ambiguous (e.g. +220 301 2345 is also a US number 220-301-2345): never moved.
    ambiguous = set()
    for digits in EXAMPLES:
        bare = digits.lstrip("+")
        for region in ("IN", "US", "GB", "SG"):
            assert normalize_mobile(digits, region) == bare
            reading = read_mobile(bare, region)
            assert reading.digits == bare or (reading.digits is None and bare in reading.ambiguous), (digits, region)
            if reading.ambiguous:
                ambiguous.add(bare)
    assert len(ambiguous) < len(EXAMPLES) / 10
    assert read_mobile("6591234567", "IN") == (None, ("6591234567", "916591234567"))
    assert read_mobile("2015550123", "US").ambiguous == ("2015550123", "12015550123")
    assert normalize_mobile("(201) 555-0123", "US") == "12015550123"  # formatted: the region's way of writing
    assert normalize_mobile("12015550123", "US") == "12015550123"  # starts with the region's own code


def test_default_region_accepts_iso_codes_libphonenumber_knows():
    assert default_region(" in ") == "IN" and default_region("") is None and default_region(None) is None
    for code in ("XX", "IND", "ZZ", "001", "I"):
        with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
            default_region(code)


def _sent_mobiles(values: list) -> dict[str, str | None]:
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


@settings(max_examples=50, deadline=None)
@given(st.lists(mobiles, min_size=1, max_size=12), st.sampled_from([None, "IN", "GB", "US"]))
def test_validation_payload_and_sandbox_agree(values, region):
    judged = phones.mobile_validity(pd.Series(values, dtype=object), region)
    # Validation hands valid rows over with their E.164 digits; the payload sends exactly those.
    handed_over = [norm if pd.notna(valid) and valid else None for norm, valid in zip(judged["norm"], judged["valid"])]
    sent = _sent_mobiles(handed_over)
    checked = []
    for i, (value, norm, valid) in enumerate(zip(values, judged["norm"], judged["valid"])):
        assert norm == normalize_mobile(value, region)  # the vectorised reading is the scalar one
        if pd.notna(valid) and valid:
            checked.append(value)
            assert sent[f"C{i}"] == norm
            assert rules.normalize("mobile", norm) == norm  # the key the sandbox stores and looks up
            assert rules.is_valid("mobile", norm)
    event("valid mobiles checked" if checked else "no valid mobile drawn")  # --hypothesis-show-statistics

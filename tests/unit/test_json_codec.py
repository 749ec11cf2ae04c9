"""associate.json_codec: canonical payload bytes, request bodies and answers."""

from __future__ import annotations

import json

import pytest

from associate import json_codec


def test_canonical_sorts_keys_without_spaces_and_keeps_text_unescaped():
    element = {"b": [1, {"z": None, "a": "Zoë"}], "a": True}
    assert json_codec.canonical(element) == '{"a":true,"b":[1,{"a":"Zoë","z":null}]}'.encode()


def test_dumps_is_the_json_of_the_object_in_its_own_order():
    body = [{"profiles": [{"identifiers": [{"type": "mobile", "value": "919876543210"}]}], "id": 7}]
    encoded = json_codec.dumps(body)
    assert isinstance(encoded, bytes) and json.loads(encoded) == body
    assert encoded.startswith(b'[{"profiles"')


@pytest.mark.parametrize("text", ["{", "not json", "", '{"a": 1,}'])
def test_loads_refuses_what_json_refuses_with_a_value_error(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        json_codec.loads(text)


def test_loads_reads_text_and_bytes_alike():
    assert json_codec.loads('{"a": [1, 2.5, "x"]}') == json_codec.loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}

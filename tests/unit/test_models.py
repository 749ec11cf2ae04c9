from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from associate.models import CustomerElement, HierarchyDefinition


def element(**extra):
    body = {
        "profiles": [{"identifiers": [{"type": "mobile", "value": "919876544424"}],
                      "createDate": "2016-06-23T19:11:18+08:00"}],
        "loyaltyInfo": {"loyaltyType": "loyalty"},
    }
    body.update(extra)
    return body


def test_dates_keep_their_offset_on_the_wire():
    wire = CustomerElement.model_validate(element()).to_api()
    assert wire["profiles"][0]["createDate"] == "2016-06-23T19:11:18+08:00"


def test_naive_dates_are_sent_as_utc():
    el = CustomerElement.model_validate(element())
    el.profiles[0].createDate = datetime(2020, 1, 2, 3, 4, 5)
    assert CustomerElement.model_validate(el.to_api()).to_api()["profiles"][0]["createDate"] == "2020-01-02T03:04:05+00:00"
    el.profiles[0].createDate = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert el.to_api()["profiles"][0]["createDate"] == "2020-01-02T03:04:05-05:00"


def test_missing_loyalty_info_is_rejected():
    body = element()
    del body["loyaltyInfo"]
    with pytest.raises(ValidationError, match="loyaltyInfo"):
        CustomerElement.model_validate(body)


def test_profile_needs_an_identifier():
    with pytest.raises(ValidationError, match="identifiers"):
        CustomerElement.model_validate(element(profiles=[{"identifiers": []}]))


def test_hierarchy_role_navigation():
    h = HierarchyDefinition.model_validate({
        "code": "h", "name": "H",
        "roles": [{"code": "FA", "childRoleCode": "FC", "maxChild": 3}, {"code": "FC"}],
    })
    assert h.parent_role_of("FC").code == "FA"
    assert h.role("FA").maxChild == 3 and h.role("XX") is None

"""The sandbox's own request models of the customer calls, strict where Capillary's reference is.

The client's models (``associate.models``) are lenient on purpose; these are not: a field the
reference marks mandatory is required, and a field it does not list is refused (400), so that a
payload the real API would refuse fails our tests. Card rules (``seriesId``/``seriesCode`` and
``statusLabel``) are element errors, checked in ``rules``, not here.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator


class Codes:
    """Codes the sandbox answers for customers (docs/sandbox.md lists each with its source)."""

    INVALID_INPUT = 400
    ALL_FAILED = 500
    INVALID_MOBILE = 1001
    INVALID_EMAIL = 1002
    INVALID_EXTERNAL_ID = 1003
    NO_PRIMARY_IDENTIFIER = 1007
    EMAIL_USED = 1016
    MOBILE_USED = 1032
    EXTERNAL_ID_USED = 1033
    REGISTRATION_DATE_OUT_OF_RANGE = 1034
    NO_IDENTIFIER_NON_LOYALTY = 1045
    BATCH_LIMIT_EXCEEDED = 1060
    CUSTOMER_NOT_FOUND = 8015
    INVALID_MOBILE_WARNING = 8056
    INVALID_MOBILE_CHANNEL_WARNING = 8058
    VALUE_USED_BY_OTHER_USER = 91007
    EXTENDED_FIELDS_FAILED = 91015
    # Fleet association (reference: fleet and company codes).
    CYCLIC_HIERARCHY = 1608
    HIERARCHY_NOT_ACTIVE = 1610
    ROLE_CODE_INVALID = 1615
    HIERARCHY_CODE_INVALID = 1616
    CHILD_ROLE_NOT_QUALIFIED = 1617
    TOO_MANY_CHILDREN = 1618
    PARENT_NOT_MAPPED = 1625
    OTHER_HIERARCHY = 1626
    ROLE_FIXED = 1627
    COMPANY_FIXED = 1628
    COMPANY_NOT_FOUND = 1704
    COMPANY_INACTIVE = 1705


IdentifierType = Literal[
    "mobile", "email", "externalId", "wechat", "martjackId", "fbId", "tmall_uname",
    "cuid", "ali_uname", "jd_uname", "vip_uname", "mobilePush", "line", "unionId",
    "cardnumber",
]
CommChannelType = Literal["mobile", "email", "wechat", "ios", "android", "line", "mobilePush"]


def _aware_datetime(value: Any) -> Any:
    # The reference's format is YYYY-MM-DDTHH:MM:SS+HH:MM; a naive value is taken as UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def _format(value: datetime) -> str:
    # Stored and answered as the reference writes it: seconds, with the offset (+00:00, not Z).
    return value.isoformat(timespec="seconds")


CapDateTime = Annotated[datetime, BeforeValidator(_aware_datetime), PlainSerializer(_format, return_type=str)]


class Strict(BaseModel):
    """Only the fields the reference lists; unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    def to_api(self) -> dict[str, Any]:
        """The JSON form, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


class Identifier(Strict):
    """``{type, value}``; a ``cardnumber`` carries its series, status and card fields."""

    type: IdentifierType
    value: str = Field(min_length=1)
    seriesId: int | None = None
    seriesCode: str | None = None
    statusLabel: str | None = None
    cardExternalId: str | None = None
    extendedFields: dict[str, Any] | None = None
    customFields: dict[str, Any] | None = None


class ChannelMeta(BaseModel):
    """``meta`` of a channel: the reference shows ``residence``, ``office`` and, for mobilePush only,
    ``lastViewedDate``; other keys are kept (the reference calls meta "additional details")."""

    model_config = ConfigDict(extra="allow")
    lastViewedDate: date | None = None


class CommChannel(Strict):
    """A communication channel of a profile."""

    type: CommChannelType
    value: str = Field(min_length=1)
    primary: bool = False
    verified: bool = False
    subscribed: bool | None = None
    meta: ChannelMeta | None = None
    attributes: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _last_viewed_on_mobile_push_only(self) -> CommChannel:
        if self.meta is not None and self.meta.lastViewedDate is not None and self.type != "mobilePush":
            raise ValueError("meta.lastViewedDate is applicable to the mobilePush channel only")
        return self


class Profile(Strict):
    """One source profile; ``identifiers`` is mandatory."""

    firstName: str | None = None
    lastName: str | None = None
    identifiers: list[Identifier] = Field(min_length=1)
    commChannels: list[CommChannel] = Field(default_factory=list)
    fields: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None  # the call's ?source= when absent, else INSTORE
    accountId: str | None = None
    createDate: CapDateTime | None = None
    associatedWith: str | None = None


class CustomerRef(Strict):
    """A parent or child customer inside ``associationDetails``."""

    profiles: list[Profile] = Field(min_length=1)
    extendedFields: dict[str, Any] = Field(default_factory=dict)


class FleetCompanyRef(Strict):
    """The fleet company, by external id."""

    externalId: str = Field(min_length=1)


class AssociationDetails(Strict):
    """Hierarchy, role, company, parent and children of a customer."""

    hierarchyCode: str = Field(min_length=1)
    roleCode: str = Field(min_length=1)
    fleetCompany: FleetCompanyRef | None = None
    parentCustomer: CustomerRef | None = None
    childCustomers: list[CustomerRef] = Field(default_factory=list)
    childRoleCode: str | None = None


class LoyaltyInfo(Strict):
    """``loyaltyType`` is mandatory."""

    loyaltyType: Literal["loyalty", "non_loyalty"]


class ProgramEnrollment(Strict):
    """Enrolment in one loyalty program."""

    programId: int
    tierNumber: int | None = Field(default=None, ge=1)
    loyaltyPoints: int | None = None
    tierExpiryDate: CapDateTime | None = None
    pointsExpiryDate: CapDateTime | None = None


class CustomerElement(Strict):
    """One element of ``POST``/``PUT /v2/customers/bulk``."""

    profiles: list[Profile] = Field(min_length=1)
    loyaltyInfo: LoyaltyInfo
    loyaltyProgramEnrollments: list[ProgramEnrollment] = Field(default_factory=list)
    extendedFields: dict[str, Any] = Field(default_factory=dict)
    referralCode: str | None = None
    associationDetails: AssociationDetails | None = None


# --- companies, hierarchies, tokens --------------------------------------------------


class CompanyKey(BaseModel):
    """``parentCompany``: a company named by its external id."""

    model_config = ConfigDict(extra="ignore")
    externalId: str


class CompanyBody(BaseModel):
    """Body of ``POST /v2/companies`` (Add Company: name, externalId, hierarchyDefinitionCode mandatory)."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    externalId: str
    hierarchyDefinitionCode: str = Field(min_length=1)
    extendedFields: dict[str, Any] | None = None
    parentCompany: CompanyKey | None = None


class CompanyUpdate(BaseModel):
    """Body of ``PUT /v2/companies`` (Update Company Details: every field optional)."""

    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, min_length=1)
    externalId: str | None = None
    hierarchyDefinitionCode: str | None = None
    extendedFields: dict[str, Any] | None = None
    parentCompany: CompanyKey | None = None
    isActive: bool | None = None


class RolePermission(BaseModel):
    """A permission of a role: ``{permissionCode, permissionValue}``."""

    model_config = ConfigDict(extra="ignore")
    permissionCode: str
    permissionValue: bool


class RoleBody(BaseModel):
    """A role of ``POST /v2/fleetHierarchy``; its code is checked by rule (1603), not by type."""

    model_config = ConfigDict(extra="ignore")
    code: str | None = None
    childRoleCode: str | None = None
    maxChild: int | None = None
    pointsAggregationRole: bool = False
    permissions: list[RolePermission] = Field(default_factory=list)


class HierarchyBody(BaseModel):
    """Body of ``POST /v2/fleetHierarchy`` (Create Fleet Hierarchy: only ``code`` is mandatory)."""

    model_config = ConfigDict(extra="ignore")
    code: str | None = None
    name: str | None = None
    description: str | None = None
    roles: list[RoleBody] = Field(default_factory=list)
    default: bool = False
    autoGroupCreationEnabled: bool = False
    hierarchyCreationStrict: bool = False
    skipRoleAllowed: bool = False


class TokenRequest(BaseModel):
    """Body of ``POST /v3/oauth/token/generate``."""

    key: str = Field(min_length=1)
    secret: str = Field(min_length=1)

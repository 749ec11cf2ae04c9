"""Pydantic models of the Capillary API as this project uses it.

Field names are spelled exactly as the API spells them, so ``model_dump(by_alias=False)``
is the wire format. The client reads answers leniently; the sandbox has strict models of
its own (``associate.sandbox.models``), so a payload the real API would refuse fails there.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer


def _parse_cap_datetime(value: Any) -> Any:
    # The API's date-times always carry an offset; a naive value is taken as UTC so
    # that what we send is never ambiguous.
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def format_cap_datetime(value: datetime) -> str:
    """Format a date-time as the API expects: ``YYYY-MM-DDTHH:MM:SS+HH:MM``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat(timespec="seconds")


CapDateTime = Annotated[
    datetime,
    BeforeValidator(_parse_cap_datetime),
    PlainSerializer(format_cap_datetime, return_type=str),
]

IdentifierType = Literal[
    "mobile", "email", "externalId", "wechat", "martjackId", "fbId", "tmall_uname",
    "cuid", "ali_uname", "jd_uname", "vip_uname", "mobilePush", "line", "unionId",
    "cardnumber",
]
CommChannelType = Literal["mobile", "email", "wechat", "ios", "android", "line", "mobilePush"]
LoyaltyType = Literal["loyalty", "non_loyalty"]


class Codes:
    """Documented error and warning codes (Capillary's reference); the client names no other."""

    # Customers: element errors of the bulk calls (customers.md, "Register Customer").
    INVALID_MOBILE = 1001
    INVALID_EMAIL = 1002
    INVALID_EXTERNAL_ID = 1003
    NO_PRIMARY_IDENTIFIER = 1007
    ALREADY_REGISTERED = 1014
    EMAIL_USED = 1016
    MOBILE_USED = 1032
    EXTERNAL_ID_USED = 1033
    REGISTRATION_DATE_OUT_OF_RANGE = 1034
    NO_IDENTIFIER_NON_LOYALTY = 1045
    PREFERRED_STORE_NOT_FOUND = 1053
    INVALID_TILL = 91020
    # Customers: warnings.
    INVALID_MOBILE_WARNING = 8056
    INVALID_MOBILE_CHANNEL_WARNING = 8058
    POINTS_PROCESSING_FAILED = 19223
    EXTENDED_FIELDS_FAILED = 91015
    VALUE_USED_BY_OTHER_USER = 91007
    # Customers: lookup ("Fetch Customer ID"); 8015 is also PUT's "no such customer" (assumption).
    CUSTOMER_NOT_FOUND = 8015
    CUSTOMER_NOT_FOUND_IN_SOURCE = 8065
    # Whole request.
    BATCH_LIMIT_EXCEEDED = 1060
    INVALID_INPUT = 400
    ALL_FAILED = 500
    # Fleet hierarchies and associations (group-loyalty.md, "Response Codes").
    HIERARCHY_CODE_EXISTS = 1600
    HIERARCHY_CYCLE = 1608
    HIERARCHY_ID_INVALID = 1609
    HIERARCHY_NOT_ACTIVE = 1610
    ROLE_CODE_INVALID = 1615
    HIERARCHY_CODE_INVALID = 1616
    CHILD_ROLE_NOT_QUALIFIED = 1617
    TOO_MANY_CHILDREN = 1618
    PARENT_NOT_MAPPED = 1625
    OTHER_HIERARCHY = 1626
    ROLE_CANNOT_CHANGE = 1627
    COMPANY_CANNOT_CHANGE = 1628
    # Fleet companies.
    HIERARCHY_NOT_FOUND = 1701
    COMPANY_EXISTS = 1702
    PARENT_COMPANY_MISSING = 1703
    COMPANY_NOT_FOUND = 1704
    COMPANY_INACTIVE = 1705
    COMPANY_EXTERNAL_ID_EMPTY = 1707
    COMPANY_OWN_PARENT = 1709
    COMPANY_CYCLE = 1710
    HIERARCHY_UPDATE_NOT_ALLOWED = 1711


class ApiModel(BaseModel):
    """Base of request models: unknown fields are ignored, as the real service does."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_api(self) -> dict[str, Any]:
        """The JSON-ready wire form, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


class ResponseModel(BaseModel):
    """Base of response models: extra fields are kept, so nothing the server says is lost."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- messages ---------------------------------------------------------------------------


class ApiMessage(ResponseModel):
    """A warning or an error: ``{status: false, code, message}``; the reference also answers ``{}``."""

    status: bool = False
    code: int | None = None
    message: str = ""


# --- customers: request -----------------------------------------------------------------


class Identifier(ApiModel):
    """A customer identifier; ``cardnumber`` carries the card's series and status."""

    type: IdentifierType
    value: str = Field(min_length=1)
    seriesId: int | None = None
    seriesCode: str | None = None
    statusLabel: str | None = None
    cardExternalId: str | None = None
    extendedFields: dict[str, Any] | None = None


class CommChannel(ApiModel):
    """A communication channel of a profile."""

    type: CommChannelType
    value: str = Field(min_length=1)
    primary: bool = False
    verified: bool = False
    # The reference keeps a mobilePush channel's lastViewedDate here.
    meta: dict[str, Any] | None = None


class Profile(ApiModel):
    """One source profile of a customer."""

    firstName: str | None = None
    lastName: str | None = None
    identifiers: list[Identifier] = Field(min_length=1)
    commChannels: list[CommChannel] = Field(default_factory=list)
    fields: dict[str, Any] = Field(default_factory=dict)
    source: str = "INSTORE"
    accountId: str | None = None
    createDate: CapDateTime | None = None
    associatedWith: str | None = None


class CustomerRef(ApiModel):
    """A parent or child customer inside ``associationDetails``."""

    profiles: list[Profile] = Field(min_length=1)
    extendedFields: dict[str, Any] = Field(default_factory=dict)


class FleetCompanyRef(ApiModel):
    """The fleet company a customer is associated with."""

    externalId: str = Field(min_length=1)


class AssociationDetails(ApiModel):
    """Hierarchy, role, company, parent and children of a customer."""

    hierarchyCode: str = Field(min_length=1)
    roleCode: str = Field(min_length=1)
    fleetCompany: FleetCompanyRef | None = None
    parentCustomer: CustomerRef | None = None
    childCustomers: list[CustomerRef] = Field(default_factory=list)
    childRoleCode: str | None = None


class LoyaltyInfo(ApiModel):
    """Whether the customer is enrolled in loyalty."""

    loyaltyType: LoyaltyType


class ProgramEnrollment(ApiModel):
    """Enrolment in one loyalty program."""

    programId: int
    tierNumber: int | None = Field(default=None, ge=1)
    loyaltyPoints: int | None = None
    tierExpiryDate: CapDateTime | None = None
    pointsExpiryDate: CapDateTime | None = None


class CustomerElement(ApiModel):
    """One element of ``POST /v2/customers/bulk``."""

    profiles: list[Profile] = Field(min_length=1)
    loyaltyInfo: LoyaltyInfo
    loyaltyProgramEnrollments: list[ProgramEnrollment] = Field(default_factory=list)
    extendedFields: dict[str, Any] = Field(default_factory=dict)
    referralCode: str | None = None
    associationDetails: AssociationDetails | None = None


# --- customers: response ----------------------------------------------------------------


class StoredFleetCompany(ResponseModel):
    """The fleet company as stored, with its Capillary id."""

    externalId: str | None = None
    companyId: int | None = None


class StoredAssociation(ResponseModel):
    """``associationDetails`` as stored by Capillary."""

    hierarchyCode: str | None = None
    hierarchyId: int | None = None
    roleCode: str | None = None
    fleetCompany: StoredFleetCompany | None = None
    parentRoleId: int | None = None
    skipLevelAllowed: bool | None = None
    new: bool | None = None
    childCustomer: bool | None = None
    childRoleCode: str | None = None


class CustomerEntity(ResponseModel):
    """A customer as answered by the bulk call (the element's ``entity``); a failed child has no id."""

    id: int | None = None
    profiles: list[dict[str, Any]] = Field(default_factory=list)
    loyaltyInfo: dict[str, Any] | None = None
    segments: Any = None
    referralCode: str | None = None
    associationDetails: StoredAssociation | None = None
    extendedFields: dict[str, Any] = Field(default_factory=dict)
    warnings: list[ApiMessage] = Field(default_factory=list)
    errors: list[ApiMessage] = Field(default_factory=list)


class BulkResultElement(ResponseModel):
    """One element of the bulk answer, in request order."""

    entity: CustomerEntity | None = None
    childEntities: list[CustomerEntity] = Field(default_factory=list)
    childCount: int | None = None
    childSuccessCount: int | None = None
    childFailureCount: int | None = None
    errors: list[ApiMessage] = Field(default_factory=list)
    warnings: list[ApiMessage] = Field(default_factory=list)


# --- auth -------------------------------------------------------------------------------


class TokenRequest(ApiModel):
    """Body of ``POST /v3/oauth/token/generate``."""

    key: str = Field(min_length=1)
    secret: str = Field(min_length=1)


# --- companies --------------------------------------------------------------------------


class CompanyRef(ApiModel):
    """A reference to a company by its external id."""

    externalId: str = Field(min_length=1)


class CompanyRequest(ApiModel):
    """Body of ``POST /v2/companies`` (and of ``PUT``, where only name and fields count)."""

    name: str = Field(min_length=1)
    externalId: str = Field(min_length=1)
    hierarchyDefinitionCode: str = Field(min_length=1)
    extendedFields: dict[str, Any] | None = None
    parentCompany: CompanyRef | None = None


# --- hierarchy definitions --------------------------------------------------------------


class HierarchyRole(ApiModel):
    """A role of a hierarchy definition and the role its children take."""

    code: str = Field(min_length=1)
    childRoleCode: str | None = None
    maxChild: int | None = Field(default=None, ge=0)
    pointsAggregationRole: bool = False


class HierarchyDefinition(ApiModel):
    """A fleet hierarchy definition (``/v2/fleetHierarchy``)."""

    id: int | None = None
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    roles: list[HierarchyRole] = Field(min_length=1)
    skipRoleAllowed: bool = False
    hierarchyCreationStrict: bool = False
    autoGroupCreationEnabled: bool = False
    # The reference's GET answers spell it "active".
    isActive: bool = Field(default=True, validation_alias=AliasChoices("isActive", "active"))

    def role(self, code: str) -> HierarchyRole | None:
        """The role with this code, or None."""
        return next((r for r in self.roles if r.code == code), None)

    def parent_role_of(self, code: str) -> HierarchyRole | None:
        """The role whose children take role ``code``."""
        return next((r for r in self.roles if r.childRoleCode == code), None)


class StoredHierarchy(HierarchyDefinition):
    """A hierarchy definition as Capillary answers it: lenient (the reference's samples lack names)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    roles: list[HierarchyRole] = Field(default_factory=list)

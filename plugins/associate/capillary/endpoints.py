"""Paths of the Capillary endpoints this client calls, relative to the cluster URL."""

from __future__ import annotations

TOKEN = "/v3/oauth/token/generate"
CUSTOMERS_BULK = "/v2/customers/bulk"
CUSTOMER_LOOKUP = "/v2/customers/lookup"
CUSTOMER_DETAILS = "/v2/customers/lookup/customerDetails"
COMPANIES = "/v2/companies"
HIERARCHY = "/v2/fleetHierarchy"
HIERARCHIES = "/v2/fleetHierarchy/all"

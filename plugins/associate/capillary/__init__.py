"""Client of Capillary's customer, company and fleet hierarchy APIs, one concern a module.

``settings`` (connection -> ``ClientSettings``), ``endpoints`` (paths), ``transport``
(session, OAuth tokens, rate limit, retries), ``outcomes`` (answers and outcomes),
``bulk`` (bulk sends), ``companies`` (ensure companies), ``client`` (``CapillaryClient``,
which ties them together), ``ratelimit`` (the process-wide limiter). The Airflow hook
(``associate.hook``) builds a client from a connection.
"""

"""Keep Capillary's B2B customer hierarchy in sync with a data warehouse."""

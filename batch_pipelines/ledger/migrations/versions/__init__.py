"""The ledger's Alembic revisions, oldest first (a package so that installs ship them)."""

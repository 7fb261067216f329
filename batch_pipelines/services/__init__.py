"""Services: submit, poll and collect over the adapters; no Dagster here."""

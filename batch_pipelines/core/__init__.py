"""Pure values and decisions: no I/O, no Dagster. Everything above builds on these."""

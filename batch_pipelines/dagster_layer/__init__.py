"""The Dagster layer: the only code that imports dagster. It turns the services' return values
into materializations, observations, check results and run requests, and nothing more."""

"""The Dagster layer: the only code that imports dagster. It turns the services' return values
into materializations, observations, check results and run requests, and nothing more.

Users import its public names from the package's top level (``from batch_pipelines import
BatchGatewayResource, batch_workload``); this package re-exports nothing, so there is one way in.
"""

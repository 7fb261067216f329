"""Hands a workload's results to a downstream asset as a ``pd.DataFrame`` argument.

The gateway writes the results table itself (streamed to Parquet, never all in memory while it
is built) and records its path in the materialization's ``results_path``; so storing an output
is a no-op, and loading reads that path for each partition the downstream step asks for. A
downstream asset then writes ``def report(classification_results: pd.DataFrame)`` instead of
finding the file through the resource.
"""

import dagster as dg
import pandas as pd

from batch_pipelines.dagster_layer import metadata_keys as keys


class BatchResultsIOManager(dg.ConfigurableIOManager):
    """Loads the results Parquet table of each requested partition; stores nothing (it exists)."""

    def handle_output(self, context: dg.OutputContext, obj: None) -> None:
        return None

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        asset_key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        frames = []
        for partition in partitions:
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=asset_key, asset_partitions=[partition] if partition is not None else None
                ),
                limit=1,
            ).records
            materialization = records[0].asset_materialization if records else None
            path = materialization.metadata.get(keys.RESULTS_PATH) if materialization else None
            if path is None:
                raise dg.Failure(
                    description=f"{asset_key.to_user_string()} partition {partition} has no results table yet "
                    "(its batches may still be running)"
                )
            frames.append(pd.read_parquet(str(path.value)))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

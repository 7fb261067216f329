"""Result tables: outcomes as Parquet, per batch and per partition."""

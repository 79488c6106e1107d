"""Embedding rows -> <prefix>-XXXXX-of-YYYYY.parquet in embeddings_schema(dim) (the embed stage's output)."""

from __future__ import annotations

import apache_beam as beam

from schemas.inputs import embeddings_schema
from transforms.embed import rows_to_embeddings_table

ROWS_PER_FILE_BATCH = 4096  # rows per Arrow table handed to the Parquet writer


class WriteEmbeddings(beam.PTransform):
    """Row dicts -> <prefix>-XXXXX-of-YYYYY.parquet in embeddings_schema(dim)."""

    def __init__(self, prefix: str, dim: int):
        super().__init__()
        self._prefix = prefix
        self._dim = dim

    def expand(self, rows):
        dim = self._dim
        return (
            rows
            | "BatchRows" >> beam.BatchElements(min_batch_size=ROWS_PER_FILE_BATCH, max_batch_size=ROWS_PER_FILE_BATCH)
            | "ToArrow" >> beam.Map(rows_to_embeddings_table, dim)
            | "WriteParquet"
            >> beam.io.WriteToParquetBatched(self._prefix, embeddings_schema(dim), file_name_suffix=".parquet")
        )

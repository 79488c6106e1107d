"""The real bundled all-MiniLM-L6-v2 through EmbedTexts (slow: loads 90 MB of weights)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from schemas.build_config import EmbedConfig
from transforms.embed import EmbedTexts
from transforms.model import model_dimension

TEXTS = [
    ("a", "A cat is sleeping on the sofa.", "ha"),
    ("b", "On the couch, a cat is taking a nap.", "hb"),  # paraphrase of a
    ("c", "Interest rates rose by half a percent in March.", "hc"),  # unrelated
]


@pytest.mark.slow
def test_bundled_model_embeds_384_d_and_ranks_a_paraphrase_first():
    assert model_dimension("bundled") == 384

    def check(rows):
        vectors = {row["id"]: row["vector"] for row in rows}
        assert sorted(vectors) == ["a", "b", "c"]
        assert all(v.shape == (384,) and abs(float(v @ v) - 1) < 1e-5 for v in vectors.values())
        paraphrase, unrelated = float(vectors["a"] @ vectors["b"]), float(vectors["a"] @ vectors["c"])
        assert paraphrase > 0.6 > 0.2 > unrelated, (paraphrase, unrelated)
        assert not np.allclose(vectors["a"], vectors["b"])

    with BeamTestPipeline() as p:
        rows = p | beam.Create(TEXTS) | EmbedTexts(EmbedConfig(model="bundled", batch_size=2), "doc", dim=384)
        assert_that(rows, check)

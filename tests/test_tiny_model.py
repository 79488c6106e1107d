from sentence_transformers import SentenceTransformer


def test_tiny_model_loads_and_embeds_normalised(tiny_model_dir):
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    vectors = model.encode(["a claim about genes", "another text"], convert_to_numpy=True)
    assert vectors.shape == (2, 32)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5

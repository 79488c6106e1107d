"""A small PyTorch trainer for sentence-transformers models on negforge's Parquet tiers."""

"""Storage helpers shared by the pipelines, the trainer and the audit."""

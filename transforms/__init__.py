"""Reusable Beam PTransforms and DoFns of negforge, and the pure functions they call."""

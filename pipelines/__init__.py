"""Thin entry points of negforge: options -> config -> transforms -> run."""

"""Contracts of negforge: Arrow schemas, frozen configs, the run layout and dataset invariants."""

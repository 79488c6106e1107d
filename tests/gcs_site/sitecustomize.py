"""Test-only: processes that see STORAGE_EMULATOR_HOST connect to the GCS emulator anonymously at once.

Beam looks for Google credentials first and, finding none, retries for about 30 s per process before it
connects anonymously. Tests put this folder on PYTHONPATH for every process they start (worker pool, SDK
workers), so each skips that wait. Nothing here runs outside tests.
"""

import os

if os.environ.get("STORAGE_EMULATOR_HOST"):
    try:
        from apache_beam.internal.gcp import auth

        auth._Credentials._credentials_init = True  # "looked already: none" -> anonymous client
        auth._Credentials._credentials = None
    except Exception:  # Beam without the gcp extra: nothing to skip
        pass

"""The trainer runs where Beam, faiss and nlpaug are not installed (a GPU box)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
BLOCKED = {"apache_beam", "faiss", "nlpaug"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

PROBE = """
import pipelines.train, schemas.train_config, trainer.curriculum, trainer.data, trainer.evaluate
import trainer.loop, trainer.loss, trainer.memory_bank, trainer.presets
from trainer.loop import resolve_model_path
from trainer.presets import resolve_train_config
assert resolve_model_path("bundled")
assert resolve_train_config(preset="full").memory_bank == 512
try:
    import apache_beam
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker does not block")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok")
"""


def test_trainer_imports_without_beam_faiss_or_nlpaug():
    result = subprocess.run([sys.executable, "-c", BLOCKER + PROBE], capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")

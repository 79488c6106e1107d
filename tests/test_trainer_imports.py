"""The trainer and the usefulness bench's training/eval part run where Beam, faiss, nlpaug and Polars are not
installed (a GPU box carrying only torch, sentence-transformers, pyarrow and the `datasets` wheel)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
BLOCKED = {"apache_beam", "faiss", "nlpaug", "polars"}
class Hide(importlib.abc.MetaPathFinder):
    \"\"\"Wraps a finder so the blocked packages look not installed (find_spec gives None, import fails).\"\"\"
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.inner.find_spec(name, path, target)
    def find_distributions(self, *args, **kwargs):
        return getattr(self.inner, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
    def invalidate_caches(self):
        getattr(self.inner, "invalidate_caches", lambda: None)()
sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
"""

PROBE = """
import pipelines.train, schemas.train_config, trainer.curriculum, trainer.data, trainer.evaluate
import trainer.loop, trainer.loss, trainer.memory_bank, trainer.presets, trainer.refresh
import bench.usefulness
from bench.usefulness import Bench, schedule, summarise
from trainer.data import load_beir_negatives, read_beir
import sentence_transformers, datasets
from sentence_transformers import SentenceTransformerTrainer
from trainer.loop import resolve_model_path
from trainer.presets import resolve_train_config
assert resolve_model_path("bundled")
assert resolve_train_config(preset="baseline").memory_bank == 512
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


def test_trainer_and_bench_import_without_beam_faiss_nlpaug_or_polars():
    result = subprocess.run([sys.executable, "-c", BLOCKER + PROBE], capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")

"""ONNX Runtime backends for a sentence-transformers model: `onnx` (fp32) and `onnx-int8` (dynamic int8).

sentence-transformers' own `backend="onnx"` goes through optimum-onnx, whose releases (0.1.0 and older)
require transformers < 4.58 and fail to import against the transformers 5 negforge runs on. So the same
two steps are done here with the libraries underneath: the model's transformer is exported locally with
`torch.onnx.export` (opset 17, dynamic batch and sequence axes, eager attention), ONNX Runtime's
transformer optimizer fuses it (kept only when its outputs equal the export's), and `onnx-int8` quantizes that
with ONNX Runtime's dynamic quantizer using the settings of sentence-transformers'
`export_dynamic_quantized_onnx_model(model, "<isa>")` (optimum's AutoQuantizationConfig.<isa>(is_static=False):
IntegerOps, weights QInt8 symmetric per-channel, activations QUInt8, no reduce_range except avx2).

The exported files live in a cache folder outside the package (`$NEGFORGE_ONNX_CACHE`, default
`~/.cache/negforge/onnx`), one sub-folder per model content fingerprint; writes are atomic (temp + rename),
so workers of one machine may race to export and every one ends up reading a whole file. Nothing is
downloaded. The torch transformer inside the loaded SentenceTransformer is swapped for `OrtTransformer`,
so tokenization, prompts, length sorting, pooling and normalisation stay sentence-transformers' own.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import threading
import warnings

import numpy as np
import torch

from schemas.build_config import EMBED_BACKENDS as BACKENDS  # noqa: F401 (re-exported for model.py)
from schemas.build_config import EMBED_DEVICES as DEVICES
from schemas.fingerprints import digest, model_content_digest, model_fingerprint
from schemas.model_spec import BUNDLED

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
EXPORT_RECIPE = "eager"  # in the cached file names: bump when export_onnx/optimize_onnx change what they write
_EXPORT_LOCK = threading.Lock()  # one export per process at a time (threads of one worker share the cache)


def onnx_cache_root() -> str:
    """Where exported models are kept: $NEGFORGE_ONNX_CACHE, else $XDG_CACHE_HOME/negforge/onnx."""
    explicit = os.environ.get("NEGFORGE_ONNX_CACHE")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "negforge", "onnx")


def quantization_isa() -> str:
    """The int8 target of this CPU, as sentence-transformers names them: avx512_vnni, avx512, avx2 or arm64."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        flags = []
    for isa in ("avx512_vnni", "avx512f", "avx2"):
        if isa in flags:
            return "avx512" if isa == "avx512f" else isa
    return "avx2"


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cpu' and 'cuda' are returned as given."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _atomic_target(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial",
                                       dir=os.path.dirname(path))
    os.close(handle)
    os.chmod(staging, 0o644)  # mkstemp's 0600 would hide the export from other users of a shared cache
    return staging


def _uses_token_type_ids(hf_model) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(hf_model.forward).parameters


def export_onnx(hf_model, path: str) -> str:
    """Export a Hugging Face encoder (input_ids, attention_mask[, token_type_ids] -> last_hidden_state) to `path`.

    Attention is exported in its eager form (same maths as SDPA): ONNX Runtime's transformer optimizer
    recognises that pattern and fuses it into one Attention op, which the SDPA export hides from it.
    """
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if _uses_token_type_ids(hf_model) else [])
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}

    class _Encoder(torch.nn.Module):  # positional inputs -> the one tensor sentence-transformers pools
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    staging = _atomic_target(path)
    was_training = hf_model.training
    attention = getattr(hf_model.config, "_attn_implementation", None)
    can_switch = attention not in (None, "eager") and hasattr(hf_model, "set_attn_implementation")
    hf_model.eval()
    try:
        if can_switch:
            hf_model.set_attn_implementation("eager")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on branches that are constant for an encoder
            torch.onnx.export(_Encoder(hf_model).cpu(), dummy, staging, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                              do_constant_folding=True, dynamo=False, external_data=False)
        os.replace(staging, path)
    finally:
        if can_switch:
            hf_model.set_attn_implementation(attention)
        hf_model.train(was_training)
        if os.path.exists(staging):
            os.remove(staging)
    return path


def _sample_feeds(path: str, vocab_size: int) -> dict[str, np.ndarray]:
    """Two padded rows of random token ids for every input of the graph at `path` (a fixed seed)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    ids = rng.integers(1, max(2, vocab_size), size=(2, 24), dtype=np.int64)  # [2, 24]
    mask = np.ones_like(ids)
    mask[1, 10:] = 0  # a padded row
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    names = [i.name for i in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()]
    return {name: feeds[name] for name in names}


def _run(path: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feeds)[0]  # [2, 24, hidden]


def optimize_onnx(plain_path: str, path: str, config) -> str:
    """ONNX Runtime's transformer optimizer (fused Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) on an
    export; the result is kept only when it gives the export's outputs (max abs difference <= 1e-4 on padded
    random input), else the plain graph is copied to `path`, so the check is made once per model."""
    import shutil

    staging = _atomic_target(path)
    try:
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            heads = int(getattr(config, "num_attention_heads", 0) or 0)
            hidden = int(getattr(config, "hidden_size", 0) or 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimized = optimize_model(plain_path, model_type="bert", num_heads=heads, hidden_size=hidden,
                                           opt_level=1)
            optimized.save_model_to_file(staging)
            feeds = _sample_feeds(plain_path, int(getattr(config, "vocab_size", 2)))
            difference = float(np.abs(_run(staging, feeds) - _run(plain_path, feeds)).max())
            fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
            if not difference <= 1e-4:
                raise ValueError(f"optimized graph differs from the export by {difference}")
            logger.info("ONNX Runtime fusions %s (max abs difference %.1e)", fused, difference)
        except Exception as error:  # noqa: BLE001 - an unknown architecture keeps the plain export
            logger.info("keeping the plain ONNX export of %s: %s", plain_path, error)
            shutil.copyfile(plain_path, staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def quantize_int8(fp32_path: str, path: str, isa: str) -> str:
    """Dynamic int8 quantization of an fp32 export, with sentence-transformers' settings for `isa`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = _atomic_target(path)
    try:
        quantize_dynamic(
            fp32_path,
            staging,
            per_channel=True,  # AutoQuantizationConfig.<isa>(is_static=False) defaults
            reduce_range=isa == "avx2",  # only optimum's avx2 config asks for 7-bit weights
            weight_type=QuantType.QInt8,
            # fused contrib ops (Attention, SkipLayerNorm) defeat shape inference: their outputs are float
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "DefaultTensorType": 1},
        )
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def export_cache_key(local_dir: str, spec: str | None = None) -> str:
    """The export cache folder's name: the bundled package's version for `bundled` (no byte read: hashing its 90 MB
    on every load cost each ONNX stage run a few tenths of a second that torch does not pay), else the folder's
    content digest (path-independent)."""
    if spec == BUNDLED:
        return digest(model_fingerprint(BUNDLED))
    return model_content_digest(local_dir)


def onnx_model_path(local_dir: str, hf_model, backend: str, spec: str | None = None) -> str:
    """The cached .onnx file of `backend` for the model in `local_dir`, exported, optimized (and quantized) when
    missing: model-opset17-eager.onnx (export) -> ...-eager-ort.onnx (onnx) -> ...-ort_qint8_<isa>.onnx (onnx-int8).
    The file names carry the export recipe, so a changed recipe never reads an older one's files."""
    folder = os.path.join(onnx_cache_root(), export_cache_key(local_dir, spec))
    plain = os.path.join(folder, f"model-opset{ONNX_OPSET}-{EXPORT_RECIPE}.onnx")
    fp32 = os.path.join(folder, f"model-opset{ONNX_OPSET}-{EXPORT_RECIPE}-ort.onnx")
    with _EXPORT_LOCK:
        if not os.path.exists(fp32):
            if not os.path.exists(plain):
                logger.info("exporting %s to ONNX at %s (once per model content)", local_dir, plain)
                export_onnx(hf_model, plain)
            optimize_onnx(plain, fp32, hf_model.config)
        if backend == "onnx":
            return fp32
        isa = quantization_isa()
        int8 = os.path.join(folder, f"model-opset{ONNX_OPSET}-{EXPORT_RECIPE}-ort_qint8_{isa}.onnx")
        if not os.path.exists(int8):
            logger.info("quantizing %s to int8 for %s at %s", fp32, isa, int8)
            quantize_int8(fp32, int8, isa)
        return int8


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for `device` ('cpu' or 'cuda'); cuda needs onnxruntime-gpu."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ValueError(
            "--device cuda with an ONNX backend needs onnxruntime-gpu (this onnxruntime offers "
            f"{', '.join(ort.get_available_providers())}); use --embed-backend torch on GPU workers"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtTransformer(torch.nn.Module):
    """Stands in for a sentence-transformers Transformer module's Hugging Face model: runs an ORT session.

    forward(input_ids, attention_mask[, token_type_ids], **ignored) -> {"last_hidden_state": float32 tensor
    [batch, seq, hidden]}, which is all the Transformer module reads. `config` is the original model's.
    """

    def __init__(self, onnx_path: str, config, device: str, threads: int | None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=ort_providers(device))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config
        self.onnx_path = onnx_path

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_ignored):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["token_type_ids"] is None and "token_type_ids" in self.input_names:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {name: given[name].detach().cpu().numpy().astype(np.int64, copy=False) for name in self.input_names}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)  # [batch, seq, hidden] float32
        return {"last_hidden_state": torch.from_numpy(hidden).to(input_ids.device)}


def use_onnx_backend(model, local_dir: str, backend: str, device: str, threads: int | None = None,
                     spec: str | None = None):
    """Swap the torch transformer of a loaded SentenceTransformer for an ORT session of `backend`; returns model."""
    if backend not in ("onnx", "onnx-int8"):
        raise ValueError(f"ONNX backend must be 'onnx' or 'onnx-int8', got {backend!r}")
    transformer = model[0]
    hf_model = getattr(transformer, "model", None)
    if hf_model is None or not hasattr(hf_model, "config"):
        raise ValueError(f"--embed-backend {backend} needs a model whose first module is a Transformer, "
                         f"got {type(transformer).__name__}; use --embed-backend torch")
    path = onnx_model_path(local_dir, hf_model, backend, spec)
    transformer.model = OrtTransformer(path, hf_model.config, device, threads)
    logger.info("embedding backend %s: %s on %s", backend, path, device)
    return model

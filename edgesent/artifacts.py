"""Artifact directories: the ``edgesent.json`` manifest, file hashes and atomic writes.

Stdlib only, because the runtime reads manifests too. Every stage writes its output into a
temporary sibling directory and renames it into place at the end, so a crash or a failed check
never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesent.errors import ConfigError, ModelError


MANIFEST_NAME = "edgesent.json"
FORMAT_VERSION = 1
KIND_PYTORCH = "pytorch"
KIND_ONNX = "onnx"
_VERSIONED = (
    "edgesent",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "numpy",
    "accelerate",
)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks so large models do not load whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """Map every file under ``directory`` (except the manifest) to its size and sha256."""
    table = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST_NAME:
            table[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a result (absent ones are left out)."""
    import importlib.metadata  # imported here: the runtime reads manifests and must start fast
    import platform

    versions = {"python": platform.python_version()}
    for dist in _VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def write_manifest(directory: Path, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Write ``edgesent.json`` with the payload plus kind, versions, timestamp and file hashes.

    Call it last, once every other file of the directory is in place, so the hashes cover them.
    """
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **payload,
        "versions": library_versions(),
        "files": file_table(directory),
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read a directory's manifest; ModelError if the directory or manifest is missing or broken."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{directory}: no {MANIFEST_NAME}; is this an edgesent model directory?")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable manifest ({err})") from err


def manifest_sha256(directory: Path) -> str:
    """sha256 of a directory's manifest file: the fingerprint a derived artifact records."""
    return sha256_file(Path(directory) / MANIFEST_NAME)


def verify_files(directory: Path, manifest: dict[str, Any], names: list[str] | None = None) -> None:
    """Check files against the manifest's hashes; ModelError naming the first mismatch."""
    table = manifest.get("files", {})
    for name in names if names is not None else list(table):
        entry = table.get(name)
        path = Path(directory) / name
        if entry is None:
            raise ModelError(f"{directory}: {name} is not listed in {MANIFEST_NAME}")
        if not path.is_file():
            raise ModelError(f"{path}: listed in {MANIFEST_NAME} but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ModelError(
                f"{path}: sha256 does not match {MANIFEST_NAME} (modified or truncated); "
                "re-export it, or skip the check if you changed it on purpose"
            )


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out_dir`` only if the block succeeds.

    Raises ConfigError up front when ``out_dir`` exists and ``overwrite`` is false, or when its
    parent cannot be written, so no work is wasted on an output that could not be saved.
    """
    import shutil  # imported here: the runtime reads manifests and never writes, and must start fast
    import tempfile

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        umask = os.umask(0)  # mkdtemp makes the directory 0700; give the result the usual permissions
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as err:
        raise ConfigError(f"cannot write to {out_dir.parent}: {err.strerror or err}") from err
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

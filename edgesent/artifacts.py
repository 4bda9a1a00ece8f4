"""Artifact directories: file names, the ``edgesent.json`` manifest, its typed view, hashes and atomic writes.

Stdlib only, because the runtime and the server read manifests too. This module is the one home of:

- the file names of a model directory (``MANIFEST_NAME``, ``ONNX_FILE_NAME``, ...);
- the manifest: written with a hash of its own content, read back through :func:`read_model_dir`, which
  validates its structure and returns a typed :class:`ModelDir`, so every stage checks its source the same
  way and with the same one-line errors;
- atomic outputs: every stage writes into a temporary sibling and renames it into place at the end
  (:func:`atomic_output_dir`, :func:`atomic_output_file`), so a crash, a failed check or a signal never
  leaves a half-written model where a good one was, and ``--overwrite`` replaces only an edgesent artifact
  that is not the command's own source; leftovers of a killed run are removed by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgesent.errors import ConfigError, ModelError


logger = logging.getLogger(__name__)

MANIFEST_NAME = "edgesent.json"
ONNX_FILE_NAME = "model.onnx"
TOKENIZER_FILE_NAME = "tokenizer.json"
HF_CONFIG_NAME = "config.json"
WEIGHTS_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
LOGITS_OUTPUT = "logits"
# A seeded sample of a model's evaluation split kept in its directory: the parity gate's default data.
PARITY_SAMPLE_NAME = "parity_sample.jsonl"
PARITY_SAMPLE_ROWS = 1000
# 2: the manifest carries content_sha256, a hash of its own content (labels included).
FORMAT_VERSION = 2
KIND_PYTORCH = "pytorch"
KIND_ONNX = "onnx"
KINDS = (KIND_PYTORCH, KIND_ONNX)
TASK_CLASSIFY = "text-classification"
TASK_SPANS = "token-classification"
TASKS = (TASK_CLASSIFY, TASK_SPANS)
DEFAULT_PRECISION = "fp32"
RUNTIME_ONNXRUNTIME = "onnxruntime"
RUNTIME_OPENVINO = "openvino"
# The runtime an export was built and verified for (its manifest's ``runtime``; absent: onnxruntime).
RUNTIMES = (RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO)
_CONTENT_KEY = "content_sha256"
# Temporary names carry the writer's pid, so a later run can tell a dead run's leftovers from a live one's.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-.*)?$")
_VERSIONED = (
    "edgesent",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
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


def _content_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own content hash."""
    body = {key: value for key, value in manifest.items() if key != _CONTENT_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def write_manifest(directory: Path, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Write ``edgesent.json`` atomically: the payload plus kind, versions, timestamp, file hashes and a hash
    of the manifest's own content (so an edited label map is refused like an edited model).

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
    manifest[_CONTENT_KEY] = _content_sha256(manifest)
    with atomic_output_file(Path(directory) / MANIFEST_NAME) as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read a directory's manifest as a dict; ModelError if the directory or manifest is missing or broken.

    Only the JSON is checked here; :func:`read_model_dir` validates the content of a model's manifest.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{directory}: no {MANIFEST_NAME}; is this an edgesent model directory?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: the manifest is a JSON {type(manifest).__name__}, not an object; re-create it")
    return manifest


def manifest_sha256(directory: Path) -> str:
    """sha256 of a directory's manifest file: the fingerprint a derived artifact records."""
    return sha256_file(Path(directory) / MANIFEST_NAME)


def _file_entries(directory: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` table, checked for shape: name -> {"bytes": int, "sha256": str}."""
    table = manifest.get("files", {})
    where = Path(directory) / MANIFEST_NAME
    if not isinstance(table, dict):
        raise ModelError(f"{where}: 'files' is a {type(table).__name__}, not a table of file hashes; re-create it")
    for name, entry in table.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise ModelError(f"{where}: the entry for {name!r} needs 'bytes' (integer) and 'sha256'; re-create it")
    return table


def verify_files(directory: Path, manifest: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """Check files against the manifest's hashes; ModelError naming the first mismatch."""
    table = _file_entries(directory, manifest)
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
                "re-create the model, or pass --no-verify (predict, evaluate) if you changed it on purpose"
            )


@dataclass(frozen=True)
class ModelDir:
    """A validated view of an edgesent model directory: what every stage needs to know about its source.

    Attributes:
        path: the directory.
        kind: ``"pytorch"`` (finetune, prune) or ``"onnx"`` (export).
        task: what the model does (``"text-classification"``).
        labels: label names: class id order for classification; the span labels for span extraction.
        tags: a span model's BIO tags, index = output id (``O``, ``B-<label>``, ``I-<label>``, ...); None
            for classification, whose outputs are ``labels``.
        max_length: tokens per text the model was trained or exported for.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        model_file: the ONNX file (onnx) or the weights file (pytorch), relative to ``path``.
        manifest: the whole manifest, for stage-specific keys.
        sha256: sha256 of the manifest file, the fingerprint a derived artifact records.
    """

    path: Path
    kind: str
    task: str
    labels: tuple[str, ...]
    tags: tuple[str, ...] | None
    max_length: int
    precision: str
    model_file: str
    manifest: dict[str, Any]
    sha256: str

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the model's output units mean, index = output id: the tags of a span model, else the labels."""
        return self.tags if self.tags is not None else self.labels

    @property
    def model_path(self) -> Path:
        """The model file's full path."""
        return self.path / self.model_file

    @property
    def runtime(self) -> str:
        """The runtime an ONNX export was built and verified for: ``"onnxruntime"`` or ``"openvino"``.

        The manifest's ``runtime``; exports without one (older ones, fp32, fp16) are ``"onnxruntime"``'s.
        """
        return self.manifest.get("runtime") or RUNTIME_ONNXRUNTIME

    def hf_config(self) -> dict[str, Any]:
        """``config.json`` as a dict; ModelError if it is missing or unreadable."""
        return _read_hf_config(self.path)


def _read_hf_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / HF_CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{path}: missing; is this a Hugging Face model directory?") from err
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable ({err}); re-create the model") from err
    if not isinstance(config, dict):
        raise ModelError(f"{path}: not a JSON object; re-create the model")
    return config


def _valid_labels(where: Path, labels: Any, key: str = "labels") -> tuple[str, ...]:
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(label, str) and label for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ModelError(f"{where}: manifest '{key}' is {labels!r}, not a list of distinct names; re-create it")
    return tuple(labels)


def _check_content(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest's own hash, and config.json's id2label against the model's output classes."""
    stored = manifest.get(_CONTENT_KEY)
    if stored is None:
        version = manifest.get("format_version")
        if isinstance(version, int) and version >= 2:
            raise ModelError(f"{path / MANIFEST_NAME}: no {_CONTENT_KEY}; the manifest was edited, re-create it")
        logger.warning("%s: written by an older edgesent; its labels are not hash-protected", path / MANIFEST_NAME)
    elif stored != _content_sha256(manifest):
        raise ModelError(
            f"{path / MANIFEST_NAME}: its content does not match its {_CONTENT_KEY} (edited by hand?); "
            "re-create the model, or pass --no-verify (predict, evaluate) if you changed it on purpose"
        )
    config_path = path / HF_CONFIG_NAME
    if config_path.is_file():
        id2label = _read_hf_config(path).get("id2label")
        labels = manifest.get("tags") or manifest["labels"]  # a span model's outputs are its BIO tags
        if (
            isinstance(id2label, dict)
            and id2label
            and {str(i): lab for i, lab in enumerate(labels)} != {str(k): v for k, v in id2label.items()}
        ):
            raise ModelError(
                f"{path}: {MANIFEST_NAME} labels {labels} disagree with {HF_CONFIG_NAME} id2label {id2label}; "
                "the label map was edited, re-create the model"
            )


def read_model_dir(path: str | Path, kind: str | None = None, verify: bool = True) -> ModelDir:
    """Read and validate a model directory: the one way every stage checks its source.

    Args:
        path: the directory (``edgesent finetune``, ``prune`` or ``export`` output).
        kind: require this kind (``"pytorch"`` or ``"onnx"``); None accepts either.
        verify: check the manifest's own hash, ``config.json``'s label map and every listed file's sha256
            (default True). Skip it only for a directory you changed on purpose.

    Returns:
        The typed view.

    Raises:
        ModelError: not a directory, no or broken manifest, the wrong kind, missing or malformed fields,
            a missing model file, or (with ``verify``) content that no longer matches its hashes.
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    found = manifest.get("kind")
    if found not in KINDS:
        raise ModelError(f"{directory}: unknown model kind {found!r} in {MANIFEST_NAME}; expected pytorch or onnx")
    if kind == KIND_ONNX and found != KIND_ONNX:
        raise ModelError(
            f"{directory}: a {found!r} model directory, not an ONNX export; export it first with: edgesent export"
        )
    if kind == KIND_PYTORCH and found != KIND_PYTORCH:
        raise ModelError(
            f"{directory}: manifest kind is {found!r}, not 'pytorch'; pass the PyTorch model directory "
            "(written by edgesent finetune or prune)"
        )
    labels = _valid_labels(directory, manifest.get("labels"))
    max_length = manifest.get("max_length", 128 if found == KIND_PYTORCH else None)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ModelError(f"{directory}: manifest 'max_length' is {max_length!r}; re-create the model")
    task = manifest.get("task", TASK_CLASSIFY)
    if task not in TASKS:
        raise ModelError(f"{directory}: manifest task {task!r} is not one of {', '.join(TASKS)}; re-create the model")
    tags = _valid_labels(directory, manifest.get("tags"), "tags") if task == TASK_SPANS else None
    precision = manifest.get("precision", DEFAULT_PRECISION)
    if not isinstance(precision, str):
        raise ModelError(f"{directory}: manifest 'precision' is {precision!r}; re-create the model")
    runtime = manifest.get("runtime", RUNTIME_ONNXRUNTIME)
    if runtime not in RUNTIMES:
        raise ModelError(
            f"{directory}: manifest 'runtime' is {runtime!r}, not one of {', '.join(RUNTIMES)}; re-export the model"
        )
    if found == KIND_ONNX:
        model_file = manifest.get("onnx_file", ONNX_FILE_NAME)
        # a plain file name: with --no-verify an edited manifest must still not point outside the directory
        if not isinstance(model_file, str) or not model_file or Path(model_file).name != model_file:
            raise ModelError(f"{directory}: manifest 'onnx_file' is {model_file!r}; re-export the model")
    else:
        model_file = next((name for name in WEIGHTS_FILE_NAMES if (directory / name).is_file()), WEIGHTS_FILE_NAMES[0])
    if not (directory / model_file).is_file():
        raise ModelError(f"{directory}: no {model_file}; re-create the model")
    if not (directory / TOKENIZER_FILE_NAME).is_file():
        raise ModelError(f"{directory}: no {TOKENIZER_FILE_NAME} (fast tokenizer); re-create the model")
    table = _file_entries(directory, manifest)
    if verify:
        _check_content(directory, manifest)
        verify_files(directory, manifest, table)
    return ModelDir(
        directory, found, task, labels, tags, max_length, precision, model_file, manifest, manifest_sha256(directory)
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _dead_runs_leftovers(target: Path) -> Iterator[tuple[Path, re.Match[str]]]:
    """(path, name match) of each ``.NAME.tmp-PID-*`` or ``.NAME.old-PID`` beside ``target`` whose process is gone:
    the one scan behind removing leftovers and restoring an interrupted replacement."""
    if not target.parent.is_dir():
        return
    for entry in list(target.parent.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == target.name and not _pid_alive(int(match["pid"])):
            yield entry, match


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what killed runs left beside ``target`` (``.NAME.tmp-PID-*``, ``.NAME.old-PID``).

    Only leftovers of processes that are no longer running are touched, so two live runs never trip
    over each other. (A ``.NAME.old-PID`` with no ``target`` beside it is put back first, by
    ``check_output_dir``.) Returns what was removed (each is also logged).
    """
    import shutil

    removed: list[Path] = []
    for entry, match in _dead_runs_leftovers(Path(target)):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.warning("removed %s, left by an interrupted run (pid %s)", entry, match["pid"])
        removed.append(entry)
    return removed


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_replaceable(out_dir: Path, sources: Iterable[str | Path]) -> None:
    """Refuse to replace anything but an edgesent artifact that the command does not read from."""
    if not (out_dir / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"{out_dir} exists and is not an edgesent artifact (no {MANIFEST_NAME}); --overwrite replaces only "
            "a directory that edgesent wrote: choose another --out, or remove it yourself"
        )
    if _is_within(Path.cwd().resolve(), out_dir):
        raise ConfigError(f"{out_dir} is the current directory or holds it; --overwrite will not replace it")
    for source in sources:
        if _is_within(Path(source).resolve(), out_dir):
            raise ConfigError(
                f"{out_dir} is this command's input {source} or holds it; write to another --out directory"
            )


def check_output_dir(
    out_dir: Path, overwrite: bool = False, sources: Iterable[str | Path] = (), kind: str | None = None
) -> Path:
    """The checks :func:`atomic_output_dir` makes before any work, for a command to make them before a long run.

    ``kind``: replace only an artifact of this kind (a report replaces an earlier report, never a model).

    Returns:
        ``out_dir`` resolved.

    Raises:
        ConfigError: ``out_dir`` is a file, exists without ``overwrite``, or may not be replaced (not an
            edgesent artifact, the current directory, or one of ``sources`` or a parent of them).
    """
    out_dir = Path(out_dir).resolve()
    _restore_replaced(out_dir)  # first, so the checks here and the final write's judge the same directory
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists; pass --overwrite to replace it")
    if out_dir.exists():
        _check_replaceable(out_dir, sources)
        if kind is not None:
            _check_kind(out_dir, kind)
    return out_dir


def _check_kind(out_dir: Path, kind: str) -> None:
    """Refuse to replace an artifact of another kind (a model with a report)."""
    try:
        found = read_manifest(out_dir).get("kind")
    except ModelError as err:
        raise ConfigError(f"{out_dir}: its {MANIFEST_NAME} cannot be read ({err}); choose another directory") from err
    if found != kind:
        what = f"an edgesent {found!r} directory" if found else "an edgesent directory of no kind"
        raise ConfigError(
            f"{out_dir} is {what}, not a {kind}; --overwrite replaces only an earlier {kind}: choose another directory"
        )


def _restore_replaced(target: Path) -> None:
    """Put back an output a killed run had moved aside (``.NAME.old-PID``, its process gone, no NAME beside it):
    it was killed between moving the old output away and moving the new one in, so nothing is lost."""
    if target.exists():
        return
    for entry, match in _dead_runs_leftovers(target):
        if match["kind"] == "old":
            try:
                entry.rename(target)
            except OSError as err:
                raise ConfigError(f"cannot restore {target} from {entry}: {err.strerror or err}") from err
            logger.warning("restored %s from %s, left by a run killed while replacing it", target, entry)
            return


@contextlib.contextmanager
def atomic_output_dir(
    out_dir: Path, overwrite: bool = False, sources: Iterable[str | Path] = (), kind: str | None = None
) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out_dir`` only if the block succeeds.

    Args:
        out_dir: the final directory.
        overwrite: replace ``out_dir`` if it exists; allowed only for an edgesent artifact (it has a
            manifest) that is not the current directory, nor one of ``sources``, nor a parent of them.
        sources: the command's inputs (model directories, data files), which must survive.
        kind: replace only an artifact of this manifest kind (see :func:`check_output_dir`).

    Raises:
        ConfigError: up front, when ``out_dir`` exists and may not be replaced, or its parent cannot be
            written, so no work is wasted on an output that could not be saved.
    """
    import shutil  # imported here: the runtime reads manifests and never writes, and must start fast
    import tempfile

    out_dir = check_output_dir(out_dir, overwrite, sources, kind)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
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


def writes_in_place(path: Path) -> bool:
    """Whether ``path`` is written into rather than replaced: a device, a FIFO or anything under ``/dev``
    (``/dev/stdout`` is a link to whatever standard output is: a pipe, a terminal or the user's file)."""
    path = Path(path)
    return path.as_posix().startswith("/dev/") or (path.exists() and not path.is_file() and not path.is_dir())


@contextlib.contextmanager
def atomic_output_file(path: Path) -> Iterator[IO[str]]:
    """Yield a text handle on a temporary sibling that replaces ``path`` only if the block succeeds.

    A symbolic link is kept and what it points to is replaced; a path that exists and is not a regular file (a
    device such as ``/dev/null``, a FIFO) is written in place, never renamed over.

    Raises:
        ConfigError: the file cannot be created.
    """
    path = Path(path)
    if writes_in_place(path):
        try:
            handle = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed by the with below
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
        with handle:
            yield handle
        return
    if path.is_symlink():
        path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        handle = open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_dir(purpose: str) -> Iterator[Path]:
    """A temporary working directory (checkpoints, intermediate ONNX files) removed on exit or signal.

    Its name carries the pid, so one left by a killed run (``kill -9``) is removed by the next run.
    """
    import shutil
    import tempfile

    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"edgesent-{re.escape(purpose)}-(\d+)-")
    for entry in root.glob(f"edgesent-{purpose}-*"):
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not _pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)
            logger.warning("removed %s, left by an interrupted run (pid %s)", entry, match[1])
    work = Path(tempfile.mkdtemp(prefix=f"edgesent-{purpose}-{os.getpid()}-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Typed errors. The CLI turns each into one ``Error: ...`` line and the class's exit code."""

from __future__ import annotations


class EdgesentError(Exception):
    """Base class: every error edgesent raises on purpose."""

    exit_code = 1


class ConfigError(EdgesentError):
    """A configuration value is invalid (names the field and the value)."""

    exit_code = 2


class DataError(EdgesentError):
    """Input data cannot be used (names the file, line and problem)."""

    exit_code = 2


class MissingDependencyError(EdgesentError):
    """An optional extra is not installed (names the pip command)."""

    exit_code = 2


class ModelError(EdgesentError):
    """A model directory is missing, incomplete or has been tampered with."""

    exit_code = 2


class ExportError(EdgesentError):
    """Export or quantization failed."""

    exit_code = 1


class ParityError(EdgesentError):
    """The exported model does not reproduce the source model's outputs."""

    exit_code = 1


class BenchmarkGateError(EdgesentError):
    """A latency gate failed."""

    exit_code = 1


class TrainingError(EdgesentError):
    """Training went wrong in a way the model shows (a loss or weights that are not finite); nothing is saved."""

    exit_code = 1

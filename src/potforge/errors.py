"""Typed errors. Everything a user can cause derives from :class:`PotforgeError`; the CLI prints
those as one line (no traceback). Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PotforgeError(Exception):
    """An error caused by input, configuration or environment, reported to the user as one line."""


class ConfigError(PotforgeError):
    """A configuration file or option is invalid."""


class ModelFileError(PotforgeError):
    """A model file is missing, corrupt, truncated or of an unknown format."""


class UnknownElementError(PotforgeError):
    """A structure contains an element the model was not trained for."""


class StructureError(PotforgeError):
    """A structure cannot be evaluated (overlapping atoms, degenerate cell, unreadable file...)."""


class DataError(PotforgeError):
    """A dataset is missing, unreadable or inconsistent."""

"""Reference oracles behind one small interface: cells in; energy, forces, stress, or a typed
failure out. See :mod:`potforge.oracle.base` for the contract and :mod:`potforge.oracle.runner`
for isolated execution with real timeouts."""

from __future__ import annotations

from typing import Any

from potforge.oracle.base import (
    FAILURE_KINDS,
    InvalidResult,
    Label,
    Oracle,
    OracleCrashed,
    OracleFailure,
    OracleSetupError,
    OracleTimeout,
    SCFNotConverged,
    validate_label,
)
from potforge.oracle.builtin import BUILTIN, EAMOracle, EMTOracle, EspressoOracle, GPAWOracle, ImportedOracle

#: Oracle names accepted by :func:`get_oracle` (plus ``python:<import path>``).
ORACLE_NAMES = (*BUILTIN, "python:<module>:<Class>")


def get_oracle(name: str, settings: dict[str, Any] | None = None) -> Oracle:
    """An oracle by name: ``emt``, ``eam``, ``gpaw``, ``espresso``, or ``python:pkg.mod:Class``
    (any ASE calculator; ``settings`` are then its keyword arguments).

    Raises :class:`OracleSetupError` for an unknown name or invalid settings.
    """
    if name.startswith("python:"):
        return ImportedOracle({"path": name.removeprefix("python:"), "kwargs": dict(settings or {})})
    if name == ImportedOracle.name:
        return ImportedOracle(settings)
    if name not in BUILTIN:
        raise OracleSetupError(f"unknown oracle {name!r}; choose one of {', '.join(ORACLE_NAMES)}")
    return BUILTIN[name](settings)


def oracle_from_spec(spec: dict[str, Any]) -> Oracle:
    """Rebuild an oracle from :meth:`Oracle.spec`."""
    return get_oracle(spec["name"], spec.get("settings"))


__all__ = [
    "BUILTIN",
    "FAILURE_KINDS",
    "ORACLE_NAMES",
    "EAMOracle",
    "EMTOracle",
    "EspressoOracle",
    "GPAWOracle",
    "ImportedOracle",
    "InvalidResult",
    "Label",
    "Oracle",
    "OracleCrashed",
    "OracleFailure",
    "OracleSetupError",
    "OracleTimeout",
    "SCFNotConverged",
    "get_oracle",
    "oracle_from_spec",
    "validate_label",
]

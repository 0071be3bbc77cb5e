"""The benchmarks by name. A benchmark is a function

    fn(model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path) -> BenchmarkResult

registered with :func:`register`. Modules listed in :data:`BENCHMARK_MODULES` are imported on
first use; a new family of benchmarks (issue #7: liquid, melting, Table I) adds its module there
and registers under its own ``group``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from potforge.errors import PotforgeError
from potforge.validate.core import Evaluator
from potforge.validate.results import BenchmarkResult
from potforge.validate.settings import ValidationSettings

BenchmarkFn = Callable[[Evaluator, Evaluator, ValidationSettings, Path], BenchmarkResult]

#: Modules whose import registers benchmarks, in report order.
BENCHMARK_MODULES = (
    "potforge.validate.crystals",
    "potforge.validate.elastic",
    "potforge.validate.defects",
    "potforge.validate.paths",
    "potforge.validate.liquid",
    "potforge.validate.melting",
    "potforge.validate.heatcool",
)

#: Groups run when no ``--only`` is given; the dynamic group (MD: minutes to hours) runs on request
#: (``--only dynamic`` or ``--only all``).
DEFAULT_GROUPS = ("static",)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: ``name`` (for --only), ``title``, paper ``section``, ``group``."""

    name: str
    title: str
    section: str
    group: str
    fn: BenchmarkFn


_REGISTRY: dict[str, Benchmark] = {}


def register(name: str, title: str, section: str = "", group: str = "static") -> Callable[[BenchmarkFn], BenchmarkFn]:
    """Decorator registering a benchmark function under ``name``."""

    def deco(fn: BenchmarkFn) -> BenchmarkFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"benchmark {name!r} registered twice")
        _REGISTRY[name] = Benchmark(name, title, section, group, fn)
        return fn

    return deco


def benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name, in report order."""
    for module in BENCHMARK_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def select(only: Iterable[str] | str | None = None) -> list[Benchmark]:
    """Benchmarks named in ``only`` (names, group names, or ``all``; comma-separated strings
    allowed), in report order; for None the :data:`DEFAULT_GROUPS` (the static suite). Unknown
    names raise :class:`PotforgeError`."""
    available = benchmarks()
    if only is None:
        return [b for b in available.values() if b.group in DEFAULT_GROUPS]
    if isinstance(only, str):
        only = [only]
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    if not names:
        raise PotforgeError("--only needs at least one benchmark name")
    if "all" in names:
        return list(available.values())
    groups = {b.group for b in available.values()}
    unknown = [n for n in names if n not in available and n not in groups]
    if unknown:
        raise PotforgeError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(available)} "
            f"or a group ({', '.join(sorted(groups))}, all)"
        )
    wanted = set(names)
    return [b for b in available.values() if b.name in wanted or b.group in wanted]

"""The one batched MD engine of potforge: many periodic systems of different sizes advanced
together, each with its own clock, random stream and targets T(t), P(t) or strain(t).

State is data (:class:`MDState`, a frozen dataclass of tensors); ``init``, ``step`` and ``run``
are functions of it; forces come from a :class:`ForceProvider` (a potforge ensemble in one
batched call, an isolated oracle process, or ASE calculators). The sampler, the dynamic
validation benchmarks and the FCC/Melt dataset all run on it.
"""

from potforge.md.forces import CalculatorForces, EnsembleForces, ForceProvider, Forces, OracleForces, Spread
from potforge.md.integrators import Langevin, evaluate, init, run, step, thermalize
from potforge.md.neighbors import UnstableSystems
from potforge.md.schedules import (
    Constant,
    Drive,
    PiecewiseLinear,
    PressureSchedule,
    StrainSchedule,
    TemperatureSchedule,
)
from potforge.md.state import MDState, concat, from_atoms, state_from_dict, state_to_dict, stream_key

__all__ = [
    "CalculatorForces",
    "Constant",
    "Drive",
    "EnsembleForces",
    "ForceProvider",
    "Forces",
    "Langevin",
    "MDState",
    "OracleForces",
    "PiecewiseLinear",
    "PressureSchedule",
    "Spread",
    "StrainSchedule",
    "TemperatureSchedule",
    "UnstableSystems",
    "concat",
    "evaluate",
    "from_atoms",
    "init",
    "run",
    "state_from_dict",
    "state_to_dict",
    "step",
    "stream_key",
    "thermalize",
]

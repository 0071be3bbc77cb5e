"""The ANI model: AEVs, per-element networks, ensembles, model files and the ASE calculator."""

from potforge.model.aev import AEVParams
from potforge.model.calculator import PotforgeCalculator, atoms_to_batch, predict_frames
from potforge.model.ensemble import ANIEnsemble, EnergyPrediction, ForcePrediction, MemberPrediction
from potforge.model.interface import Potential
from potforge.model.io import load_model, load_neurochem, save_model
from potforge.model.neighbors import AtomsBatch, NeighborGraph, build_graph

#: The ASE calculator, under the name the docs use.
Calculator = PotforgeCalculator

__all__ = [
    "AEVParams",
    "ANIEnsemble",
    "AtomsBatch",
    "Calculator",
    "EnergyPrediction",
    "ForcePrediction",
    "MemberPrediction",
    "NeighborGraph",
    "Potential",
    "PotforgeCalculator",
    "atoms_to_batch",
    "build_graph",
    "load_model",
    "load_neurochem",
    "predict_frames",
    "save_model",
]

"""Settings of the validation benchmarks: one typed object, every default documented here and in
``docs/validate.md``. Units in names: Å, Å³, eV/Å; strains are fractions (0.01 = 1 %)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CRYSTALS = ("fcc", "hcp", "bcc", "sc", "diamond")
EOS_KINDS = Literal["sj", "taylor", "murnaghan", "birch", "birchmurnaghan", "pouriertarantola", "vinet"]


class ValidationSettings(BaseModel):
    """Protocol of the static benchmarks (paper III.A–C). Defaults are the full protocol;
    :meth:`quick` trims point counts and cell sizes for smoke runs and tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    element: str = Field("Al", description="element of every crystal, defect and path")

    # --- crystal energies vs volume (Fig. 2) ---------------------------------------------------
    crystal_structures: tuple[str, ...] = Field(CRYSTALS, description="structures of the Fig. 2 scan")
    crystal_volume_min_A3: float = Field(10.0, gt=0, description="smallest volume per atom, Å³")
    crystal_volume_max_A3: float = Field(30.0, gt=0, description="largest volume per atom, Å³")
    crystal_volume_step_A3: float = Field(1.0, gt=0, description="grid step of the scan, Å³")
    crystal_refine_points: int = Field(9, ge=5, description="points of the fine scan around each minimum")
    training_region_A3: tuple[float, float] = Field((11.0, 25.0), description="shaded region of Fig. 2, Å³/atom")

    # --- equation of state -----------------------------------------------------------------------
    eos_kind: EOS_KINDS = Field("birchmurnaghan", description="ASE EquationOfState form")
    eos_points: int = Field(11, ge=5, description="volumes per EOS scan")
    eos_volume_window: float = Field(0.06, gt=0, lt=0.5, description="scan spans V0·(1 ± window)")
    isolated_atom_box_A: float = Field(12.0, gt=0, description="periodic box of the isolated atom (E_coh), Å")

    # --- elastic constants -----------------------------------------------------------------------
    elastic_strains: tuple[float, ...] = Field((0.0025, 0.005, 0.01, 0.02), description="strain amplitudes")
    elastic_headline_strain: float = Field(0.005, gt=0, description="strain of the summary-table values")

    # --- defects ---------------------------------------------------------------------------------
    vacancy_supercell: int = Field(3, ge=2, description="n of the n×n×n conventional supercell (4n³ atoms)")
    surface_layers: dict[str, int] = Field(
        default_factory=lambda: {"100": 8, "110": 12, "111": 9}, description="layers of each slab"
    )
    surface_vacuum_A: float = Field(16.0, gt=0, description="vacuum between periodic slab images, Å")

    # --- Bain path -------------------------------------------------------------------------------
    bain_c_over_a_min: float = Field(0.6, gt=0)
    bain_c_over_a_max: float = Field(1.3, gt=0)
    bain_c_over_a_step: float = Field(0.025, gt=0)

    # --- generalized stacking faults -------------------------------------------------------------
    gsfe_layers: int = Field(12, ge=6, description="(111) layers of the tilted periodic cell (multiple of 3)")
    gsfe_points_per_partial: int = Field(10, ge=2, description="points per partial Burgers vector b_p = a/√6")
    gsfe_slip_max_partials: float = Field(3.0, gt=0, description="slip path end, in b_p (3 = full ⟨112⟩ period)")
    gsfe_twin_steps: int = Field(3, ge=2, description="successive (111) planes sheared on the twinning path")
    gsfe_relax: bool = Field(True, description="relax atoms perpendicular to the fault (z only)")

    # --- relaxations -----------------------------------------------------------------------------
    relax_fmax_eV_A: float = Field(0.005, gt=0, description="force criterion of every relaxation, eV/Å")
    relax_max_steps: int = Field(300, gt=0, description="L-BFGS steps before a relaxation is reported unconverged")

    @model_validator(mode="after")
    def _check(self) -> ValidationSettings:
        unknown = [s for s in self.crystal_structures if s not in CRYSTALS]
        if unknown or "fcc" not in self.crystal_structures:
            raise ValueError(f"crystal_structures must include fcc and be among {CRYSTALS}; got {unknown or 'no fcc'}")
        if self.crystal_volume_max_A3 <= self.crystal_volume_min_A3:
            raise ValueError("crystal_volume_max_A3 must exceed crystal_volume_min_A3")
        if self.bain_c_over_a_max <= self.bain_c_over_a_min:
            raise ValueError("bain_c_over_a_max must exceed bain_c_over_a_min")
        if self.gsfe_layers % 3:
            raise ValueError("gsfe_layers must be a multiple of 3 (perfect ABC stacking across the cell)")
        if self.gsfe_layers < 3 * self.gsfe_twin_steps:
            raise ValueError("gsfe_layers must be at least 3 × gsfe_twin_steps to separate periodic faults")
        if not self.elastic_strains or min(self.elastic_strains) <= 0:
            raise ValueError("elastic_strains must be positive fractions")
        if not any(abs(s - self.elastic_headline_strain) < 1e-12 for s in self.elastic_strains):
            raise ValueError("elastic_headline_strain must be one of elastic_strains")
        bad = [k for k in self.surface_layers if k not in ("100", "110", "111")]
        if bad:
            raise ValueError(f"surface_layers keys must be 100, 110, 111; got {bad}")
        return self

    @classmethod
    def quick(cls, **overrides) -> ValidationSettings:
        """Trimmed protocol: about a fifth of the calculations, smaller cells; for smoke runs."""
        values = dict(
            crystal_volume_step_A3=2.0,
            crystal_refine_points=5,
            eos_points=7,
            elastic_strains=(0.005, 0.01),
            vacancy_supercell=2,
            surface_layers={"100": 6, "110": 8, "111": 6},
            surface_vacuum_A=14.0,
            bain_c_over_a_step=0.05,
            gsfe_layers=9,
            gsfe_points_per_partial=4,
            relax_fmax_eV_A=0.01,
        )
        values.update(overrides)
        return cls(**values)

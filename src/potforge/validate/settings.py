"""Settings of the validation benchmarks: one typed object, every default documented here and in
``docs/validate.md``. Units in names: Å, Å³, eV/Å; strains are fractions (0.01 = 1 %)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CRYSTALS = ("fcc", "hcp", "bcc", "sc", "diamond")
EOS_KINDS = Literal["sj", "taylor", "murnaghan", "birch", "birchmurnaghan", "pouriertarantola", "vinet"]


class ValidationSettings(BaseModel):
    """Protocol of the benchmarks: static (paper III.A–C) and dynamic (MD, III.D–F). Defaults are
    the full protocol; :meth:`quick` trims point counts, cell sizes and run lengths."""

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

    # --- dynamic benchmarks (paper III.D–F): shared MD settings ------------------------------------
    md_timestep_fs: float = Field(1.0, gt=0, description="MD time step, fs (the paper's 1 fs)")
    md_friction_per_fs: float = Field(
        0.01, gt=0, description="Langevin friction γ of the atoms, 1/fs (relaxation time 1/γ)"
    )
    md_barostat_tau_fs: float = Field(500.0, gt=0, description="stochastic cell rescaling relaxation time, fs")
    md_seed: int = Field(0, description="seed of every MD run (velocities, Langevin noise)")
    md_reference: Literal["auto", "always", "never"] = Field(
        "auto", description="run MD with the reference too: auto = only when cheap (EMT, EAM, calculators)"
    )
    md_max_atoms_per_call: int = Field(6000, gt=0, description="model MD: atoms evaluated together per call")

    # --- liquid RDF and density (III.D, Fig. 4) ----------------------------------------------------
    liquid_supercell: int = Field(5, ge=2, description="n of the n×n×n fcc start (4n³ atoms), melted first")
    liquid_premelt_K: float = Field(2000.0, gt=0, description="temperature that melts the start crystal, K")
    liquid_premelt_fs: float = Field(5000.0, ge=0, description="length of the melting run (NPT), fs")
    liquid_npt_equilibrate_fs: float = Field(10000.0, ge=0, description="NPT equilibration at T, fs")
    liquid_npt_average_fs: float = Field(20000.0, gt=0, description="NPT run averaged for the density, fs")
    liquid_nvt_equilibrate_fs: float = Field(40000.0, ge=0, description="NVT before the RDF frames, fs")
    liquid_pressure_GPa: float = Field(0.0001, description="pressure of the liquid runs (1 atm), GPa")
    rdf_temperatures_K: tuple[float, ...] = Field((1123.0, 1183.0, 1273.0), description="RDF temperatures, K")
    rdf_frames: int = Field(100, ge=1, description="frames averaged per RDF")
    rdf_frame_interval_fs: float = Field(100.0, gt=0, description="time between RDF frames, fs")
    rdf_bin_A: float = Field(0.05, gt=0, description="RDF bin width, Å")
    rdf_r_max_A: float = Field(10.0, gt=0, description="RDF range, Å")
    density_temperatures_K: tuple[float, ...] = Field(
        (1000.0, 1123.0, 1183.0, 1273.0, 1400.0, 1500.0), description="liquid density temperatures, K"
    )

    # --- melting line by solid–liquid coexistence (III.E, Fig. 5) ----------------------------------
    melting_pressures_GPa: tuple[float, ...] = Field((0.0001, 5.0, 10.0, 20.0), description="pressures, GPa")
    melting_supercell: tuple[int, int, int] = Field((5, 5, 16), description="fcc cells of the slab (z: normal)")
    melting_guess_K: tuple[float, float, float] = Field(
        (933.0, 60.0, -0.6), description="T_m guess c0 + c1·P + c2·P² (K, GPa) that centres the first grid"
    )
    melting_grid_half_width_K: float = Field(300.0, gt=0, description="first grid spans guess ± this, K")
    melting_grid_points: int = Field(5, ge=2, description="trial temperatures of the first grid")
    melting_refine_rounds: int = Field(1, ge=0, description="finer grids inside the bracket")
    melting_refine_points: int = Field(3, ge=1, description="trial temperatures per refinement")
    melting_extend_rounds: int = Field(2, ge=0, description="grids added when the first does not bracket T_m")
    melting_prepare_fs: float = Field(4000.0, gt=0, description="each preparation stage (crystal NPT, melt half), fs")
    melting_run_fs: float = Field(20000.0, gt=0, description="coexistence run per trial temperature, fs")
    melting_sample_fs: float = Field(250.0, gt=0, description="CNA of the slab every this many fs")

    # --- heat–cool trajectory (III.F, Fig. 6) ------------------------------------------------------
    heatcool_supercell: int = Field(3, ge=2, description="n of the n×n×n fcc cell (108 atoms for 3)")
    heatcool_T_low_K: float = Field(300.0, gt=0)
    heatcool_T_high_K: float = Field(1500.0, gt=0)
    heatcool_duration_fs: float = Field(1.0e6, gt=0, description="heating plus cooling, fs (paper ≈ 1 ns)")
    heatcool_pressure_GPa: float | None = Field(0.0001, description="barostat pressure, GPa (None: constant volume)")
    heatcool_reference_every_fs: float = Field(2500.0, gt=0, description="reference single point every, fs")

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
        if self.heatcool_T_high_K <= self.heatcool_T_low_K:
            raise ValueError("heatcool_T_high_K must exceed heatcool_T_low_K")
        if self.melting_supercell[2] < 4:
            raise ValueError("melting_supercell needs at least 4 cells along z (two phases)")
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
            # dynamic: 2 fs steps, 108-atom liquids, a thin slab at 1 atm, ps-scale runs (docs/validate.md)
            md_timestep_fs=2.0,
            md_barostat_tau_fs=300.0,
            liquid_supercell=3,
            liquid_premelt_fs=2000.0,
            liquid_npt_equilibrate_fs=1500.0,
            liquid_npt_average_fs=2000.0,
            liquid_nvt_equilibrate_fs=500.0,
            rdf_frames=50,
            rdf_frame_interval_fs=50.0,
            rdf_r_max_A=6.0,
            density_temperatures_K=(1123.0, 1183.0, 1273.0, 1500.0),
            melting_pressures_GPa=(0.0001,),
            melting_supercell=(2, 2, 10),
            melting_grid_half_width_K=240.0,
            melting_grid_points=4,
            melting_refine_rounds=0,
            melting_extend_rounds=1,
            melting_prepare_fs=1000.0,
            melting_run_fs=4000.0,
            melting_sample_fs=200.0,
            heatcool_duration_fs=20000.0,
            heatcool_reference_every_fs=200.0,
        )
        values.update(overrides)
        return cls(**values)

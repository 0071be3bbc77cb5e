#!/usr/bin/env bash
# What the LAMMPS/KIM tests (tests/export) need, installed idempotently: LAMMPS with its KIM and
# PYTHON packages, its Python module (the uncertainty callback runs inside lmp), Open MPI, the
# KIM API development files, CMake and xxd (KIM builds exported models with them; without xxd
# it embeds parameter files through a far slower CMake fallback), then kimpy (ASE's KIM
# calculator) into .venv through potforge's `lammps` extra. Run after .venv exists (make gpaw
# or make test create it); a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

packages=(lammps python3-lammps openmpi-bin libkim-api-dev cmake xxd)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/pip ]; then make .venv/.installed; fi
# kimpy has no wheel here: pip builds it against the KIM API (a few minutes, once). torch is
# already installed (the CPU build `make` pins), so the extra cannot pull another one.
.venv/bin/python -c "import kimpy" 2>/dev/null || .venv/bin/pip install --quiet -e '.[lammps]'
help=$(lmp -h)
grep -qw KIM <<<"$help" && grep -qw PYTHON <<<"$help" || { echo "lmp lacks the KIM or PYTHON package" >&2; exit 1; }
echo "LAMMPS, KIM API and kimpy ready"

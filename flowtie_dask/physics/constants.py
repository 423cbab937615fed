"""Physical constants and the two electron-optical constants every kernel needs.

Units: energies in eV, lengths in Å, σ in rad/(V·Å).
"""

from __future__ import annotations

import math

__all__ = ["M0C2_EV", "HC_EV_A", "KIRKLAND_PREFACTOR", "wavelength", "interaction_constant"]

#: Electron rest energy m0c² in eV (CODATA 2018).
M0C2_EV = 510998.95
#: h·c in eV·Å (CODATA 2018).
HC_EV_A = 12398.419843320026
#: h²/(2π m0 e) in V·Å²: converts Kirkland's f_e (Å) into projected potential (V·Å) per area (Å²).
KIRKLAND_PREFACTOR = 47.878


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength.

    Parameters
    ----------
    energy : float
        Acceleration voltage / kinetic energy in eV (300e3 for 300 kV).

    Returns
    -------
    float
        λ in Å; 0.019688 Å at 300 kV.
    """
    if not energy > 0:
        raise ValueError(f"energy must be positive (eV), got {energy!r}")
    return HC_EV_A / math.sqrt(energy * (2.0 * M0C2_EV + energy))


def interaction_constant(energy: float) -> float:
    """Relativistic interaction constant σ = 2π/(λE)·(m0c² + E)/(2m0c² + E).

    Parameters
    ----------
    energy : float
        Kinetic energy in eV.

    Returns
    -------
    float
        σ in rad/(V·Å); 6.5261e-4 at 300 kV.
    """
    lam = wavelength(energy)
    return 2.0 * math.pi / (lam * energy) * (M0C2_EV + energy) / (2.0 * M0C2_EV + energy)

"""How good can a per-pattern phase method be? Reconstruct the Table 1 settings with the exact probe-frame
phase (the oracle that FlowTIE's L_vf/L_phase train toward), and with the exact phase only in the bright
or only in the dark field on top of TIE / FlowTIE, to see where the remaining error sits.

Run:  python benchmarks/flowtie_oracle.py [--out oracle_data] [--model PATH] [--settings 0 1 2 3]

Prints phase MSE (rad²) per setting. The oracle is what a network that predicts the probe-frame phase
exactly would give through the paper's Algorithm 2 (integrate, exit waves, projection). It is not a strict
floor: for thick crystals, where the projection's thin-object model is wrong, other phases can project
better.
"""

import argparse
import os

import numpy as np

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import Method, get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store
from flowtie_dask.tie import defocus_derivative

#: (material, lateral cells, thickness cells), as in benchmarks/reconstruct_table1.py
SETTINGS = [("GaAs", 2, 1), ("GaAs", 2, 5), ("SrTiO3", 3, 1), ("SrTiO3", 3, 5)]


class Mixed(Method):
    """A per-tile method (not registered): the probe-frame phase is the truth where ``mask`` (Qx, Qy) is set,
    else the phase of the method ``base`` (the truth alone if None).

    Valid for whole-scan tiles only (the truth is the whole scan's). The base method's ``check`` and ``needs``
    are not applied (one whole-scan tile needs no halo)."""

    name = "oracle"
    summary = "the exact probe-frame phase where a detector mask is set, a base method's elsewhere"
    kind = "tile"

    def __init__(self, truth, base: Method | None = None, mask=None, *, label: str = "oracle"):
        self.truth, self.base, self.mask, self.label = truth, base, mask, label

    def identity(self) -> tuple:
        return (self.name, self.label)

    def attrs(self) -> dict:
        return {"method": self.name, "model": None, "symmetry": "none"}

    def phase(self, intensity, geometry, *, boundary):
        if self.base is None:
            return defocus_derivative(intensity, geometry.c10)[1], self.truth
        i0, phase = self.base.phase(intensity, geometry, boundary=boundary)
        return i0, np.where(self.mask[None, None], self.truth, phase)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="oracle_data")
    p.add_argument("--model", default=None)
    p.add_argument("--settings", nargs="+", type=int, default=[0, 1, 2, 3])
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bases = {"TIE": get_method("tie"), "FlowTIE": get_method("flowtie", model=args.model)}
    rows = []
    for material, lateral, cells in [SETTINGS[i] for i in args.settings]:
        path = os.path.join(args.out, f"{material}_{cells}cells_pf.zarr")
        if not os.path.exists(path):
            simulate_to_store(SimulationParameters(material=material, lateral_cells=lateral, thickness_cells=cells,
                                                   scan_pixels=64, detector_pixels=64, probe_frame=True),
                              path, progress=False)
        st = open_scan_store(path)
        truth = np.asarray(st.truth["probe_frame_phase"][:], dtype=np.float64)
        mean = np.asarray(st.intensity[1]).mean(axis=(0, 1))
        bright = mean > 0.1 * mean.max()

        def mse(method, path=path):
            return evaluate_result(reconstruct(path, method, tile_size=None, progress=False), path)["mse"]

        row = {"setting": f"{material} {cells} cells", "oracle": mse(Mixed(truth))}
        for name, base in bases.items():
            row[name] = mse(Mixed(truth, base, np.zeros_like(bright), label=name))
            row[f"{name}+BF"] = mse(Mixed(truth, base, bright, label=f"{name}+BF"))
            row[f"{name}+DF"] = mse(Mixed(truth, base, ~bright, label=f"{name}+DF"))
        rows.append(row)
        print(row, flush=True)
    cols = ["oracle", "TIE", "TIE+BF", "TIE+DF", "FlowTIE", "FlowTIE+BF", "FlowTIE+DF"]
    print()
    print("phase MSE (rad²); +BF / +DF = exact probe-frame phase in the bright / dark field, method elsewhere")
    print(f"{'setting':16s}" + "".join(f"{c:>12s}" for c in cols))
    for row in rows:
        print(f"{row['setting']:16s}" + "".join(f"{row[c]:12.5f}" for c in cols))


if __name__ == "__main__":
    main()

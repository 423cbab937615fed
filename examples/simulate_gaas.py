"""Simulate the paper's GaAs defocus series through the library API and look at it.

Run:  python examples/simulate_gaas.py  (writes gaas_example.zarr and gaas_example.png here)
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store

params = SimulationParameters(material="GaAs", lateral_cells=2, thickness_cells=1, scan_pixels=32, detector_pixels=64)
path = simulate_to_store(params, "gaas_example.zarr", overwrite=True)
store = open_scan_store(path)
print(store.describe())

inten = store.to_dask()
pacbed = inten.mean(axis=(1, 2)).compute()  # position-averaged CBED of each defocus
bf = inten[1][..., 28:36, 28:36].sum(axis=(-2, -1)).compute()  # bright-field image at focus
fig, ax = plt.subplots(1, 5, figsize=(17, 3.4))
for i, d in enumerate(store.metadata.defocus):
    ax[i].imshow(np.log10(pacbed[i] + 1e-7), cmap="magma")
    ax[i].set_title(f"PACBED, Δf = {d:g} Å")
ax[3].imshow(bf.T, origin="lower", cmap="gray")
ax[3].set_title("bright field (focus)")
im = ax[4].imshow(store.truth["projected_phase"][:].T, origin="lower", cmap="viridis")
ax[4].set_title("truth: projected phase (rad)")
fig.colorbar(im, ax=ax[4])
fig.savefig("gaas_example.png", dpi=80, bbox_inches="tight")
print("wrote gaas_example.png")

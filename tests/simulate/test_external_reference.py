"""Our multislice against an established, independent code (abTEM 1.0.11) on the same crystal and optics.

The external data (../shared/data/external/mgo_200kV, as py4DSTEM DataCubes) is MgO, 2×2 cells, 2 cells
thick, 200 kV, 25 mrad with abTEM's soft aperture edge (one angular detector pixel wide), Δf = −30, 0, +30 Å.
"""

import json
import os

import numpy as np
import pytest

from flowtie_dask.simulate.series import SimulationParameters, plan_simulation, simulate_block
from tests.conftest import EXTERNAL

pytestmark = pytest.mark.skipif(not os.path.isdir(EXTERNAL), reason=f"external data not found at {EXTERNAL}")


@pytest.fixture(scope="module")
def external():
    py4DSTEM = pytest.importorskip("py4DSTEM", reason="py4DSTEM (the [dev] extra) reads the external DataCubes")
    meta = json.load(open(os.path.join(EXTERNAL, "meta.json")))
    cubes = [py4DSTEM.read(os.path.join(EXTERNAL, f)) for f in meta["files"]]
    return meta, np.stack([c.data for c in cubes]).astype(np.float64)


def test_simulator_matches_an_established_code(tmp_path, external):
    import ase.io
    from ase.build import bulk

    meta, data = external
    cif = tmp_path / "mgo.cif"
    ase.io.write(cif, bulk("MgO", "rocksalt", a=4.212, cubic=True))
    energy = meta["energy_eV"]
    n_det = meta["detector_shape"][0]
    params = SimulationParameters(
        material=str(cif), lateral_cells=2, thickness_cells=2, energy=energy, semiangle=meta["semiangle_mrad"],
        defocus_step=30.0, gpts=meta["potential_gpts"], detector_pixels=n_det, scan_pixels=meta["scan_gpts"][0],
        slice_thickness=1.0, aperture_edge=0.0,
    )
    plan = plan_simulation(params)
    lam = plan.metadata.provenance["wavelength_A"]
    dq = meta["detector_sampling_invA"][0]
    assert plan.metadata.detector_sampling[0] == pytest.approx(dq, rel=1e-4)
    assert plan.metadata.scan_step[0] == pytest.approx(meta["scan_step_A"][0], rel=1e-4)
    assert list(plan.metadata.defocus) == meta["defocus_A"]
    # abTEM's soft aperture: a linear edge one angular pixel wide
    plan = plan_simulation(SimulationParameters(**{**params.__dict__, "aperture_edge": dq * lam * 1e3}))
    ours, _ = simulate_block(plan, slice(0, 24), slice(0, 24))
    ours = ours.astype(np.float64)
    q = (np.arange(n_det) - n_det // 2) * dq * lam * 1e3
    angle = np.hypot(q[:, None], q[None, :])
    bright = angle < meta["semiangle_mrad"] - 3
    for d in range(3):
        total = np.linalg.norm(ours[d] - data[d]) / np.linalg.norm(data[d])
        bf = np.linalg.norm((ours[d] - data[d])[..., bright]) / np.linalg.norm(data[d][..., bright])
        assert total < 0.02, f"defocus {d}: relative L2 {total:.4f}"
        assert bf < 0.01, f"defocus {d}: bright field relative L2 {bf:.4f}"
    # the truth the two codes compute is the same projected phase (same MIP, same peak within 2%)
    ext = np.load(os.path.join(EXTERNAL, "truth.npz"))["projected_phase"]
    assert plan.projected_phase.mean() == pytest.approx(ext.mean(), rel=1e-3)
    assert plan.projected_phase.max() == pytest.approx(ext.max(), rel=0.02)
    assert plan.projected_phase.shape == ext.shape

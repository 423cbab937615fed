"""The calibration figure (``flowtie-dask calibrate --figure PATH``), from a :class:`~.calibration.Calibration`.

Row 1: the focus scan's mean pattern (log scale) with the fitted disk, its centre, the thresholded centre and the
centre before; the centre-of-mass field as stored (arrows over its curl) and brought to the scan axes by the found
rotation (arrows over its curl, same colour scale), and the iCoM phase in that orientation. Rows 2–3: the virtual
image that carries the drift best (least noise) of the three scans as recorded and after registration onto the
focus scan, each with its offset written on it, and a defocused scan minus the focus scan before and after. Row 4:
the other virtual images of the focus scan and every image's own drift estimate. The file is written beside its
path and renamed into place.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ..atomic import check_output, protect_inputs, write_file_atomic
from .drift import shift_image
from .rotation import curl_divergence, icom_phase, orient_field

__all__ = ["calibration_figure"]


def _image(ax, img, title, *, cmap="gray"):
    ax.imshow(np.asarray(img).T, origin="lower", cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _quiver(ax, field, background, title, limit):
    rx, ry = field.shape[1:]
    step = max(1, max(rx, ry) // 16)
    ii, jj = np.meshgrid(np.arange(0, rx, step), np.arange(0, ry, step), indexing="ij")
    ax.imshow(np.asarray(background).T, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit,
              interpolation="nearest", extent=(-0.5, rx - 0.5, -0.5, ry - 0.5))
    ax.quiver(ii, jj, field[0][::step, ::step], field[1][::step, ::step], color="k", angles="xy", pivot="mid",
              width=0.006)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _standard(a):
    a = np.asarray(a, dtype=np.float64)
    return (a - a.mean()) / (a.std() or 1.0)


def _off(ax, text):
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)


def calibration_figure(cal, path, *, overwrite: bool = False) -> str:
    """Draw the figure of a calibration and write it (PNG, or any format matplotlib takes from the suffix).

    Parameters
    ----------
    cal : Calibration
    path : str
        Output file; refused when it exists (unless ``overwrite``) or is the store.
    overwrite : bool

    Returns
    -------
    str
        The absolute path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = check_output(path, overwrite=overwrite, option="--figure")
    protect_inputs(path, [cal.path], option="--figure")
    m, d = cal.metadata, cal.disk
    fig, axes = plt.subplots(4, 4, figsize=(14, 14))
    ax = axes[0, 0]
    ax.imshow(np.log10(np.clip(cal.mean_pattern, cal.mean_pattern.max() * 1e-4, None)).T, origin="lower",
              cmap="magma", interpolation="nearest")
    t = np.linspace(0, 2 * math.pi, 200)
    ax.plot(d.centre[0] + d.radius * np.cos(t), d.centre[1] + d.radius * np.sin(t), "c-", lw=0.8)
    ax.plot(*d.centre, "c+", ms=10, label=f"fit ({d.centre[0]:.2f}, {d.centre[1]:.2f})")
    ax.plot(*d.threshold_centre, "wx", ms=6, label="thresholded CoM")
    ax.plot(*m.detector_center, "o", mfc="none", mec="lime", ms=6, label="centre before")
    ax.legend(fontsize=6, loc="upper right")
    ax.set_title(f"focus mean pattern (log), disk R = {d.radius:.2f} px\ndescan {cal.descan.span:.3f} px over the "
                 "scan (recorded, not applied)", fontsize=8)
    ax.set_xlabel("Qx (px)", fontsize=7)
    ax.set_ylabel("Qy (px)", fontsize=7)
    rel = cal.com - np.asarray(d.centre)[:, None, None]
    raw = orient_field(rel, rotation=0.0, transpose=False, detector_sampling=m.detector_sampling)
    curl, _ = curl_divergence(raw, scan_step=m.scan_step)
    limit = float(np.percentile(np.abs(curl), 99)) or 1.0
    _quiver(axes[0, 1], raw[:, 1:-1, 1:-1], curl, "CoM as stored (detector axes) over its curl", limit)
    if cal.rotation is not None:
        r = cal.rotation
        g = orient_field(rel, rotation=r.rotation, transpose=r.transpose, detector_sampling=m.detector_sampling)
        curl, _ = curl_divergence(g, scan_step=m.scan_step)
        _quiver(axes[0, 2], g[:, 1:-1, 1:-1], curl, f"rotated {r.rotation:.2f}°, transpose {r.transpose}: curl "
                f"{100 * r.curl_fraction:.1f}% (same scale)", limit)
        phase = icom_phase(g - g.mean(axis=(1, 2), keepdims=True), scan_step=m.scan_step, periodic=m.periodic)
        _image(axes[0, 3], phase, f"iCoM phase in that orientation, skewness {r.skewness:+.2f}", cmap="viridis")
    else:
        _off(axes[0, 2], "rotation not estimated")
        _off(axes[0, 3], "")
    names = ["minus", "focus", "plus"] if cal.focus_index == 1 else [f"scan {s}" for s in range(3)]
    if cal.images is not None and cal.drift is not None:
        f, focus = cal.drift, cal.focus_index
        weight = {k: 1 / np.mean([np.hypot(*x.sigma) ** 2 for i, x in enumerate(v) if i != focus])
                  for k, v in f.per_image.items()}
        kind = max(weight, key=weight.get)  # the image that carries the drift best
        stack = cal.images[kind]
        other = next(s for s in range(3) if s != focus)
        moved = [shift_image(stack[s], f.steps[s], periodic=m.periodic) for s in range(3)]
        scale = (_standard(stack[other]) - _standard(stack[focus])).std() * 3
        for row, (images, when) in enumerate(((stack, "recorded"), (moved, "registered")), start=1):
            for s in range(3):
                a = f.angstrom[s]
                _image(axes[row, s], images[s], f"{kind}, {names[s]}, {when}" + (
                    f"\ndrift ({a[0]:+.3f}, {a[1]:+.3f}) Å = ({f.steps[s][0]:+.2f}, {f.steps[s][1]:+.2f}) steps"
                    if s != focus else " (reference)"))
            diff = _standard(images[other]) - _standard(images[focus])
            axes[row, 3].imshow(diff.T, origin="lower", cmap="RdBu", vmin=-scale, vmax=scale,
                                interpolation="nearest")
            axes[row, 3].set_title(f"{names[other]} − {names[focus]} ({when}), rms {diff.std():.2f}", fontsize=8)
            axes[row, 3].set_xticks([])
            axes[row, 3].set_yticks([])
        others = [k for k in cal.images if k != kind][:2]
        for col, k in enumerate(others):
            _image(axes[3, col], cal.images[k][focus], f"{k}, {names[focus]}")
        lines = ["drift per virtual image (scan steps, ± 1σ of its noise)"]
        for k, regs in f.per_image.items():
            lines.append(f"{k}: " + "; ".join(
                f"{names[s]} ({r.shift[0]:+.2f}, {r.shift[1]:+.2f}) ± {np.hypot(*r.sigma):.2f}"
                for s, r in enumerate(regs) if s != focus))
        lines.append(f"combined (inverse-variance): disagreement {f.disagreement:.2f} step beyond noise, "
                     f"tolerance {f.tolerance:g}")
        axes[3, 2].set_axis_off()
        axes[3, 3].set_axis_off()
        table = "\n".join(lines)  # placed after the layout (a long text would shrink every panel)
    else:
        table = ""
        for a in axes[1:].ravel():
            a.set_axis_off()
        _off(axes[1, 1], "drift not estimated")
    fig.suptitle(f"flowtie-dask calibrate {cal.path}", fontsize=9)
    fig.tight_layout()
    if table:
        axes[3, 2].text(0, 0.5, table, transform=axes[3, 2].transAxes, fontsize=8, va="center", family="monospace")
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format=path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else "png")
    plt.close(fig)
    write_file_atomic(path, buf.getvalue())
    return path

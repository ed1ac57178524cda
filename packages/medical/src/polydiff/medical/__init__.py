"""polydiff for medical imaging: diffusion priors for undersampled MRI and sparse-view CT
reconstruction, active k-space subsampling, anomaly detection and minority guidance.

Modules (nothing heavy is imported at import time; the names below load on first use, PEP 562):

* :mod:`polydiff.medical.io`: DICOM (pydicom) and NIfTI (nibabel) in and out, windowing,
  slicing, one-line errors for bad input;
* :mod:`polydiff.medical.data`: MNI152 template slices (train / validation / held-out test),
  augmentations, the real CT and MR slices bundled with pydicom, a fastMRI single-coil reader;
* :mod:`polydiff.medical.prior`: the 2-D diffusion prior (core's U-Net, core's Trainer);
* :mod:`polydiff.medical.recon`: simulated acquisitions (core's measurement operators), the
  diffusion solvers (DPS, RED-Diff, data-consistency sampling) and the baselines (zero-filled /
  FBP, total-variation compressed sensing);
* :mod:`polydiff.medical.supervised`: the supervised U-Net baseline;
* :mod:`polydiff.medical.ads`: Active Diffusion Subsampling of k-space lines;
* :mod:`polydiff.medical.anomaly`: partial-diffusion anomaly maps, synthetic lesions, minority
  guidance;
* :mod:`polydiff.medical.metrics`: PSNR, SSIM, AUROC;
* :mod:`polydiff.medical.evaluate`: the evaluation shared by the app, demo and benchmark.

Measurements are simulated from real images: magnitude-only, single-coil, with Gaussian noise;
numbers are not comparable with fastMRI or clinical raw-data results.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from polydiff.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polydiff.medical.io import (
        MedicalImage,
        read_dicom,
        read_image,
        read_nifti,
        window,
        write_dicom,
        write_nifti,
    )
    from polydiff.medical.prior import DiffusionPrior, PriorConfig, train_prior
    from polydiff.medical.recon import reconstruct, simulate

try:
    __version__ = version("polydiff-medical")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["MedicalImage", "read_dicom", "read_image", "read_nifti", "window", "write_dicom",
           "write_nifti", "DiffusionPrior", "PriorConfig", "train_prior", "reconstruct",
           "simulate", "__version__"]

_HOME = {
    **dict.fromkeys(("MedicalImage", "read_dicom", "read_image", "read_nifti", "window",
                     "write_dicom", "write_nifti"), "polydiff.medical.io"),
    **dict.fromkeys(("DiffusionPrior", "PriorConfig", "train_prior"), "polydiff.medical.prior"),
    **dict.fromkeys(("reconstruct", "simulate"), "polydiff.medical.recon"),
}

__getattr__, __dir__ = lazy_exports(__name__, _HOME, ("io", "data", "prior", "recon", "ads",
                                                       "anomaly", "metrics", "evaluate",
                                                       "supervised"))

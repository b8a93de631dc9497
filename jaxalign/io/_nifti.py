"""NIfTI 4-D fMRI images and brain / ROI masks, through nibabel (optional)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from jaxalign.io._formats import existing_file
from jaxalign.io._types import Recording

__all__ = ["read_nifti", "targets_to_nifti"]


def _nibabel():
    try:
        import nibabel
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading NIfTI images needs nibabel, an optional dependency of jaxalign: "
            "pip install nibabel (or pip install \"jaxalign[io]\")"
        ) from None
    return nibabel


def _image(img, what: str):
    nib = _nibabel()
    if isinstance(img, (str, os.PathLike)):
        p = existing_file(img, what)
        try:
            return nib.load(str(p)), str(p)
        except Exception as error:  # nibabel / gzip / zlib messages that may not name the file
            raise ValueError(
                f"cannot read the {what} {p}: the file looks truncated or corrupt, or is not a NIfTI "
                f"image ({type(error).__name__}: {error})"
            ) from error
    if hasattr(img, "get_fdata") and hasattr(img, "affine"):
        return img, None
    raise ValueError(f"{what} must be a path or a nibabel image, got {type(img).__name__}")


def _data(img, src, what: str, dtype=None) -> np.ndarray:
    """The image's voxels; ValueError naming the file when they cannot be read (truncated file)."""
    try:
        return np.asarray(img.dataobj, dtype=dtype)
    except Exception as error:  # EOFError, zlib.error, OSError "could the file be damaged?"
        raise ValueError(
            f"cannot read the voxels of the {what} {src or '(in memory)'}: the file looks truncated or "
            f"corrupt ({type(error).__name__}: {error})"
        ) from error


def _mask_array(mask, shape3, affine) -> tuple[np.ndarray, str | None]:
    if isinstance(mask, np.ndarray):
        arr, src = mask, None
    else:
        img, src = _image(mask, "mask image")
        arr = _data(img, src, "mask image")
        if not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"the mask {src or ''} and the functional image have different affines")
    arr = np.squeeze(arr)
    if arr.shape != shape3:
        raise ValueError(f"mask shape {arr.shape} does not match the image volume shape {shape3}")
    if arr.dtype != bool:
        nan = np.isnan(arr) if arr.dtype.kind in "fc" else np.zeros(arr.shape, dtype=bool)
        if nan.any():  # NaN != 0 would put every NaN voxel inside the mask
            warnings.warn(
                f"the mask {src or '(array)'} has {int(nan.sum())} NaN voxels: treated as outside the mask",
                UserWarning,
                stacklevel=3,
            )
        arr = (arr != 0) & ~nan
    if not arr.any():
        raise ValueError("the mask selects no voxel")
    return arr, src


def read_nifti(images, mask=None, *, tr: float | None = None, runs=None, dtype=np.float32) -> Recording:
    """Read 4-D NIfTI fMRI runs into a (TRs, voxels) Recording.

    Parameters
    ----------
    images : str, Path, nibabel image, or a list of them
        One 4-D image per run; runs are concatenated in order and numbered
        0, 1, ... (or labelled by ``runs``).
    mask : str, Path, nibabel image or 3-D array, optional
        Brain / ROI mask; non-zero voxels are the targets, in C order
        (``data[t] == volume_t[mask]``). NaN voxels are outside the mask
        (with a warning). Must have the images' volume shape (and, for an
        image, their affine). Default: every voxel.
    tr : float, optional
        Repetition time in s. Default: the 4th zoom of the header (ms
        converted to s when the header says so); a warning and 1 s if none.
    runs : sequence of int, optional
        Label of each image (default 0, 1, ...).
    dtype : numpy dtype
        Data dtype (float32 by default, to halve memory).

    Returns
    -------
    Recording
        ``kind="fmri"``; ``times`` = ``arange(n_vols) * tr`` within each run
        (the scan clock restarts per run: use ``runs`` to separate them);
        ``mask`` (bool volume) and ``affine`` set so results can be written
        back as images with :func:`targets_to_nifti`.

    Raises
    ------
    ImportError
        Without nibabel.
    FileNotFoundError, ValueError
        Missing files; truncated or corrupt files (named); images that are
        not 4-D or differ in volume shape or affine; a mask of the wrong shape.
    """
    single = isinstance(images, (str, os.PathLike)) or hasattr(images, "get_fdata")
    images = [images] if single else list(images)
    if not images:
        raise ValueError("no image given")
    if runs is None:
        runs = list(range(len(images)))
    if len(runs) != len(images):
        raise ValueError(f"{len(runs)} run labels for {len(images)} images")
    blocks, times, run_ids, sources = [], [], [], []
    shape3 = affine = mask_arr = mask_src = None
    tr_used = tr
    for k, im in enumerate(images):
        img, src = _image(im, "NIfTI image")
        sources.append(src)
        if len(img.shape) != 4:
            raise ValueError(f"image {src or k} must be 4-D (x, y, z, time), got shape {img.shape}")
        if shape3 is None:
            shape3, affine = tuple(img.shape[:3]), np.asarray(img.affine, dtype=np.float64)
            if mask is None:
                mask_arr = np.ones(shape3, dtype=bool)
            else:
                mask_arr, mask_src = _mask_array(mask, shape3, affine)
        elif tuple(img.shape[:3]) != shape3 or not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"image {src or k} has a different volume shape or affine from the first image")
        if tr_used is None:
            zooms = img.header.get_zooms()
            t = float(zooms[3]) if len(zooms) > 3 else 0.0
            try:
                unit = img.header.get_xyzt_units()[1]
            except Exception:  # pragma: no cover - non-NIfTI headers
                unit = "sec"
            if unit == "msec":
                t /= 1000.0
            elif unit == "usec":
                t /= 1e6
            if t > 0:
                tr_used = t
            else:
                warnings.warn(f"image {src or k} has no TR in its header; using 1 s (pass tr=)", UserWarning, stacklevel=2)
                tr_used = 1.0
        vol = _data(img, src, "NIfTI image", dtype)
        blocks.append(vol[mask_arr].T)  # (n_vols, n_voxels), C order of the mask
        n = vol.shape[3]
        times.append(np.arange(n) * tr_used)
        run_ids.append(np.full(n, runs[k], dtype=np.int64))
    return Recording(
        data=np.concatenate(blocks, axis=0),
        kind="fmri",
        times=np.concatenate(times),
        runs=np.concatenate(run_ids),
        tr=tr_used,
        mask=mask_arr,
        affine=affine,
        target_names=None,
        info={"source": sources if len(sources) > 1 else sources[0], "mask_source": mask_src},
    )


def targets_to_nifti(values, recording_or_mask, affine=None, path=None):
    """Put per-target values (voxels) back into a NIfTI image, e.g. to plot a score map.

    Parameters
    ----------
    values : array_like, shape (n_voxels,) or (k, n_voxels)
        One value per target (k maps become a 4-D image with k volumes).
    recording_or_mask : Recording or bool array
        Where the targets lie (a Recording's ``mask`` and ``affine``).
    affine : (4, 4) array, optional
        Needed with a bare mask.
    path : str or Path, optional
        Also save the image there.

    Returns
    -------
    nibabel.Nifti1Image
        Voxels outside the mask are 0.
    """
    nib = _nibabel()
    if isinstance(recording_or_mask, Recording):
        mask, affine = recording_or_mask.mask, recording_or_mask.affine
        if mask is None:
            raise ValueError("the recording has no mask (it was not read from an image)")
    else:
        mask = np.asarray(recording_or_mask, dtype=bool)
    if affine is None:
        raise ValueError("an affine is needed to write an image")
    values = np.asarray(values, dtype=np.float32)
    n = int(mask.sum())
    if values.shape[-1] != n or values.ndim not in (1, 2):
        raise ValueError(f"values must have shape ({n},) or (k, {n}), got {values.shape}")
    if values.ndim == 1:
        vol = np.zeros(mask.shape, dtype=np.float32)
        vol[mask] = values
    else:
        vol = np.zeros((*mask.shape, values.shape[0]), dtype=np.float32)
        vol[mask] = values.T
    img = nib.Nifti1Image(vol, np.asarray(affine, dtype=np.float64))
    if path is not None:
        nib.save(img, str(Path(path)))
    return img

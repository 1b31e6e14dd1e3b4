"""Halving a raster: the 2x2 kernels of an overview pyramid.

Each output pixel summarizes the 2x2 block of input pixels under it. The grid
keeps its origin and doubles its pixel size, so pixel edges nest from level to
level and the multiscales ``transform.scale`` is exactly 2. An odd last row or
column is a partial block: the pixels beyond the edge count as nodata.

``average`` reproduces GDAL's average overviews (``gdaladdo -r average``,
gcore/overview.cpp) on every whole block: the mean of the block's valid pixels,
nodata where none is valid, integers rounded half away from zero, and a valid
mean that would equal nodata nudged to GDAL's replacement value (nodata + 1,
or - 1 at the type's maximum). GDAL differs on odd sizes only: it stretches
its overview over the same extent (``ceil(n / 2)`` pixels of ``n / ceil(n / 2)``
source pixels each) and weights fractional pixels, so its pixel size is not
exactly twice the source's and its edges do not nest.

``mode`` (the most frequent valid value; ties go to the first in row-major
order of the block) suits classes; ``near`` takes the block's top-left pixel.
"""

from __future__ import annotations

import math

import numpy as np

from ...enums import ResamplingMethod

_STRIP_ROWS = 256  # output rows per pass: bounds the temporaries of a band


def halved_shape(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / 2), math.ceil(width / 2)


def valid_mask(data: np.ndarray, nodata: float) -> np.ndarray:
    """True where a pixel holds data: not nodata, and not NaN for floats."""
    if np.issubdtype(data.dtype, np.floating):
        valid = ~np.isnan(data)
        return valid if math.isnan(nodata) else valid & (data != nodata)
    return data != nodata


def replacement_value(dtype: np.dtype, nodata: float) -> float:
    """GDAL's stand-in for an average that lands on the nodata value."""
    if math.isnan(nodata):
        return nodata
    if np.issubdtype(dtype, np.integer):
        return nodata - 1 if nodata == np.iinfo(dtype).max else nodata + 1
    return float(np.finfo(np.float32).tiny) if nodata == 0 else nodata + 1e-7 * nodata


def halve(data: np.ndarray, nodata: float, methods: list[ResamplingMethod]) -> np.ndarray:
    """``data`` (bands, y, x) to (bands, ceil(y/2), ceil(x/2)), one method per band."""
    if len(methods) != data.shape[0]:
        raise ValueError(f"{len(methods)} resampling methods for {data.shape[0]} bands")
    out_h, out_w = halved_shape(*data.shape[1:])
    out = np.empty((data.shape[0], out_h, out_w), dtype=data.dtype)
    for b, method in enumerate(methods):
        kernel = _KERNELS[ResamplingMethod(method)]
        for r in range(0, out_h, _STRIP_ROWS):
            rows = slice(2 * r, 2 * min(r + _STRIP_ROWS, out_h))
            out[b, r : r + _STRIP_ROWS] = kernel(_even(data[b, rows], nodata), nodata)
    return out


def _even(band: np.ndarray, nodata: float) -> np.ndarray:
    """Pad an odd last row or column with nodata so every block is whole."""
    pad_y, pad_x = band.shape[0] % 2, band.shape[1] % 2
    if not (pad_y or pad_x):
        return band
    return np.pad(band, ((0, pad_y), (0, pad_x)), constant_values=np.asarray(nodata).astype(band.dtype))


def _blocks(band: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four pixels of every block, row-major: top-left, top-right, bottom-left, bottom-right."""
    return band[0::2, 0::2], band[0::2, 1::2], band[1::2, 0::2], band[1::2, 1::2]


def _average(band: np.ndarray, nodata: float) -> np.ndarray:
    values = _blocks(band)
    valid = [valid_mask(v, nodata) for v in values]
    count = (valid[0].view(np.uint8) + valid[1].view(np.uint8) + valid[2].view(np.uint8)
             + valid[3].view(np.uint8))
    some = count > 0
    if np.issubdtype(band.dtype, np.integer):
        # Sum all four, then take out the nodata ones: no masked copies. int32
        # holds four 16-bit values; wider types need int64.
        acc: type[np.signedinteger] = np.int32 if band.dtype.itemsize <= 2 else np.int64
        total = values[0].astype(acc)
        for v in values[1:]:
            total += v
        if nodata:
            total -= (4 - count).astype(acc) * acc(nodata)
        # Half away from zero in exact integer arithmetic: (2|s| + n) // 2n, signed. Whole
        # blocks (n = 4) are most of them: a shift; the division only for the partial ones.
        signed = np.issubdtype(band.dtype, np.signedinteger)
        magnitude = np.abs(total) if signed else total
        mean: np.ndarray = (magnitude + 2) >> 2
        partial = np.flatnonzero((count.ravel() - np.uint8(1)) < 3)  # 1 to 3 valid (0 - 1 wraps to 255)
        if partial.size:
            m, n = magnitude.ravel()[partial], count.ravel()[partial].astype(acc)
            mean.ravel()[partial] = (2 * m + n) // (2 * n)
        if signed:
            np.negative(mean, out=mean, where=total < 0)
    else:
        sums = sum(np.where(ok, v, 0).astype(np.float64) for v, ok in zip(values, valid, strict=True))
        mean = sums / np.maximum(count, 1)
    out = mean.astype(band.dtype)  # a mean of valid values fits the type
    out[~some] = nodata
    if not math.isnan(nodata):
        clash = some & (out == np.asarray(nodata).astype(band.dtype))
        out[clash] = replacement_value(band.dtype, nodata)
    return out


def _mode(band: np.ndarray, nodata: float) -> np.ndarray:
    values = _blocks(band)
    valid = [valid_mask(v, nodata) for v in values]
    # Votes for each of the four candidates; invalid candidates cannot win.
    votes = np.stack([
        sum(((values[i] == values[j]) & valid[j]).astype(np.int8) for j in range(4))
        - (~valid[i]).astype(np.int8) * 8
        for i in range(4)
    ])
    winner = np.argmax(votes, axis=0)  # the first of equal counts: row-major tie-break
    out = np.choose(winner, values)
    out[~(valid[0] | valid[1] | valid[2] | valid[3])] = nodata
    return out


def _nearest(band: np.ndarray, nodata: float) -> np.ndarray:
    return band[0::2, 0::2].copy()


_KERNELS = {
    ResamplingMethod.AVERAGE: _average,
    ResamplingMethod.MODE: _mode,
    ResamplingMethod.NEAREST: _nearest,
}

"""Where patches go, and how their predictions merge into one value per pixel.

A model sees a patch of ``patch_size`` pixels; the ``clip_size`` pixels along
each patch edge are predicted with less context (zero padding inside the
model instead of real neighbours), so they are worse, or plainly wrong for a
model whose receptive field reaches past the edge. Huang et al. (2018,
"Tiling and stitching segmentation output for remote sensing: basic
challenges and recommendations", arXiv:1805.12219) measure this and
recommend overlapping patches and discarding or down-weighting their edges:
the overlap-tile strategy of U-Net (Ronneberger et al., 2015).

The global patch grid. Patch origins are fixed per store axis, anchored at
the image origin: ``k * hop`` while a patch fits, plus one patch flush with
the far edge when the regular ones stop short of it (edge patches are
shifted inwards, never padded, so no patch sees made-up pixels except on an
axis shorter than one patch, which is padded as nodata). Because positions
depend only on the store's size and the parameters, a pixel gets the same
patches, hence the same prediction, whichever block computes it: blocks
bound memory and never change the result.

With a fully convolutional model whose receptive-field radius is at most
``clip_size``, a pixel at least ``clip_size`` from its patch's edges, or at
the image edge where the patch edge *is* the image edge, gets exactly what
one forward pass over the whole image would give it. Both merge modes only
use such pixels, which is why tiled and whole-image predictions agree.

* CLIP: hop = ``patch_size - 2 * clip_size``; the clipped centres tile the
  axis, each pixel owned by exactly one patch (the first and last patches
  also own the margin on the image-edge side).
* WEIGHTED_AVERAGE: hop = half the centre, so every pixel is covered by two
  centres per axis; each patch weighs its centre with a Hann window
  (``sin**2``, which sums to one at 50% overlap, so the blend is a
  partition of unity and seamless), zero in the clipped margin, flat on the
  image-edge side; values are normalised by the summed weights. This is the
  "smooth tiled predictions" blending (overlapping windows that taper to the
  patch edge) at the cost of about four forward passes per pixel.
* TUKEY: the tiling of ukis-csmask (``tile_array``/``untile_array``) and
  of overlap-tile U-Nets generally: origins ``-clip_size + k * hop`` with hop
  = ``patch_size - clip_size - 1``, so patches start before the image and
  end past it, where they see the image mirrored at its edge (numpy's
  "symmetric" padding: the edge pixel repeated, d c b a | a b c d);
  each patch weighs its pixels with a Tukey (tapered cosine) window whose
  tapers are ``clip_size`` pixels: zero at the patch edge, one from
  ``clip_size`` in. With that hop adjacent tapers sum to exactly one, so
  the blend is a partition of unity, and with ``clip_size = int(0.2 *
  patch_size)`` it is the reference's tiling pixel for pixel (about 1.6
  forward passes per pixel) wherever the reference's own taper, ``0.2 *
  (patch_size - 1)``, is a whole number of pixels (256 px: 51). Models trained on mirrored tiles need it:
  ukis-csmask's classes agree with the reference on 95-97 % of pixels under
  CLIP or WEIGHTED_AVERAGE and on all of them under TUKEY (measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...enums import MergeModeEnum


def hop_length(patch_size: int, clip_size: int, merge_mode: MergeModeEnum) -> int:
    """Distance between patch origins along an axis."""
    if merge_mode == MergeModeEnum.TUKEY:
        return patch_size - clip_size - 1
    centre = patch_size - 2 * clip_size
    return centre if merge_mode == MergeModeEnum.CLIP else max(1, centre // 2)


def tukey_origins(n: int, clip_size: int, hop: int) -> np.ndarray:
    """TUKEY origins: from ``-clip_size``, every ``hop``, while the patch weighs an image pixel."""
    return np.arange(-clip_size, n - 1, hop)


def tukey_window(patch_size: int, clip_size: int) -> np.ndarray:
    """scipy.signal.windows.tukey(patch_size, 2 * clip_size / (patch_size - 1)), with integer tapers."""
    w = np.ones(patch_size)
    if clip_size:
        u = np.arange(clip_size + 1)
        w[: clip_size + 1] = 0.5 * (1 + np.cos(np.pi * (u / clip_size - 1)))
        w[patch_size - clip_size - 1 :] = w[: clip_size + 1][::-1]
    return w


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Image indices of ``index`` under symmetric padding (numpy's mode="symmetric", any distance)."""
    folded = np.mod(index, 2 * n)
    return np.where(folded >= n, 2 * n - 1 - folded, folded)


def patch_origins(n: int, patch_size: int, hop: int) -> np.ndarray:
    """Origins of the patches along an axis of ``n`` pixels (ascending)."""
    if n <= patch_size:
        return np.array([0])
    origins = list(range(0, n - patch_size + 1, hop))
    if origins[-1] + patch_size < n:
        origins.append(n - patch_size)  # shifted inwards, flush with the far edge
    return np.array(origins)


@dataclass(frozen=True)
class AxisTiling:
    """The patches of one axis and the pixels each contributes to.

    ``start[i]:end[i]`` is patch ``i``'s region in image coordinates: the
    pixels it owns (CLIP) or those where its weight is positive (weighted).
    """

    n: int
    patch_size: int
    clip_size: int
    merge_mode: MergeModeEnum

    @cached_property
    def origins(self) -> np.ndarray:
        hop = hop_length(self.patch_size, self.clip_size, self.merge_mode)
        if self.merge_mode == MergeModeEnum.TUKEY:
            return tukey_origins(self.n, self.clip_size, hop)
        return patch_origins(self.n, self.patch_size, hop)

    @cached_property
    def _regions(self) -> tuple[np.ndarray, np.ndarray]:
        o, p, c, n = self.origins, self.patch_size, self.clip_size, self.n
        if self.merge_mode == MergeModeEnum.TUKEY:  # the window is zero on the patch's first and last pixel
            return np.maximum(o + 1, 0), np.minimum(o + p - 1, n)
        if self.merge_mode == MergeModeEnum.CLIP:
            # Owner regions partition [0, n): each ends where the next centre starts.
            start = o + c
            start[0] = 0
            end = np.append(start[1:], n)
        else:
            start = np.where(o == 0, 0, o + c)
            end = np.where(o + p >= n, n, o + p - c)
        return start, np.minimum(end, n)

    @property
    def start(self) -> np.ndarray:
        return self._regions[0]

    @property
    def end(self) -> np.ndarray:
        return self._regions[1]

    def select(self, b0: int, b1: int) -> np.ndarray:
        """Indices of the patches contributing to pixels [b0, b1)."""
        return np.flatnonzero((self.start < b1) & (self.end > b0))

    def weights(self, i: int) -> np.ndarray:
        """Weight of each of patch ``i``'s pixels (length ``patch_size``)."""
        p, c = self.patch_size, self.clip_size
        o = int(self.origins[i])
        if self.merge_mode == MergeModeEnum.CLIP:
            w = np.zeros(p, np.float32)
            w[self.start[i] - o : self.end[i] - o] = 1.0
            return w
        if self.merge_mode == MergeModeEnum.TUKEY:
            return tukey_window(p, c).astype(np.float32)
        centre = p - 2 * c
        u = np.arange(p, dtype=np.float64)
        w = np.where((u >= c) & (u < p - c), np.sin(np.pi * (u - c + 0.5) / centre) ** 2, 0.0)
        peak = c + centre // 2
        if o == 0:
            w[:peak] = np.maximum(w[:peak], 1.0)
        if o + p >= self.n:
            w[peak:] = np.maximum(w[peak:], 1.0)
        return w.astype(np.float32)


@dataclass(frozen=True)
class BlockTiling:
    """The patches a block of pixels needs, and the window of input they read.

    ``rows``/``cols`` index the global axis tilings; ``read`` is the input
    window (row0, row1, col0, col1) covering every selected patch, which may
    reach past the image on an axis shorter than one patch (padded as
    nodata), and under TUKEY on any side (mirrored).
    """

    rows: np.ndarray
    cols: np.ndarray
    read: tuple[int, int, int, int]


def block_tiling(row_axis: AxisTiling, col_axis: AxisTiling,
                 window: tuple[int, int, int, int]) -> BlockTiling:
    r0, r1, c0, c1 = window
    rows, cols = row_axis.select(r0, r1), col_axis.select(c0, c1)
    p = row_axis.patch_size
    read = (
        int(row_axis.origins[rows[0]]), int(row_axis.origins[rows[-1]]) + p,
        int(col_axis.origins[cols[0]]), int(col_axis.origins[cols[-1]]) + p,
    )
    return BlockTiling(rows=rows, cols=cols, read=read)

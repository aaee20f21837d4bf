"""Tiered, tiled super-resolution for the 100 MP corpus (paper 3.1.3). No Dagster here.

* :mod:`.tiers` - ``tier_for(width, height, cfg)`` -> ``archive`` / ``2x`` / ``4x``;
* :mod:`.backends` - ``SRBackend(scale).upscale_tile(rgb) -> rgb`` and the ``BACKENDS``
  registry (``lanczos``, ``realesrgan``, ``diffusers``);
* :mod:`.tiles` - the shared streaming tile engine (``TileSpec``, ``TiledUpscaler``,
  ``upscale_image``);
* :mod:`.storage` - region sources and streaming writers (tiled TIFF default, PNG, JPEG XL,
  WebP);
* ``uhr upscale`` and ``uhr seam-check`` live in :mod:`cli.corpus`.
"""

from curation.upscale.tiers import ARCHIVE, X2, X4, scale_for, tier_bounds, tier_for

__all__ = ["ARCHIVE", "X2", "X4", "scale_for", "tier_bounds", "tier_for"]

"""Click parameter types the commands share.

click's ``float`` and ``FloatRange`` accept ``nan`` and ``inf`` (``float('nan')`` parses, and
every comparison with NaN is false, so a range never refuses it): a NaN threshold then flags
nothing. :class:`FiniteFloat` refuses both, as the config schema does.
"""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A finite float (no ``nan`` / ``inf``), optionally within ``FloatRange``'s bounds."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)


#: a positive whole number (sizes, strides, counts)
POSITIVE_INT = click.IntRange(min=1)

"""image_scores [3.1.2, App. A]: every purification score next to the limit that judged it."""

from curation.lineage.core import register_link_provider
from curation.lineage.providers._util import ManifestLinks, cmp, num, rejected_suffix


def limits(snapshot: dict | None) -> dict:
    """The fixed purification limits of the config the row ran with (None when unknown)."""
    p = ((snapshot or {}).get("config") or {}).get("purification") or {}
    return {
        "exposure_max_fraction": (p.get("exposure") or {}).get("max_fraction"),
        "min_laplacian_var": (p.get("sharpness") or {}).get("min_laplacian_var"),
        "max_textureless_fraction": (p.get("flatness") or {}).get("max_textureless_fraction"),
    }


@register_link_provider
class ImageScoresLinks(ManifestLinks):
    stage = "image_scores"
    required = True
    title = "purification scores"

    def summarize(self, ctx, r):
        snap = ctx.config_snapshot(r["config_hash"])
        lim = limits(snap)
        r["limits"] = lim if snap else "config snapshot not found"
        return (f"exposure {cmp(r.get('exposure_fraction'), '<=', lim['exposure_max_fraction'])}, "
                f"sharpness {cmp(r.get('laplacian_var'), '>=', lim['min_laplacian_var'])}, "
                f"flatness {cmp(r.get('flat_fraction'), '<=', lim['max_textureless_fraction'])}, "
                f"entropy {num(r.get('entropy'), '.4f')}, LAION {num(r.get('laion_score'))}, "
                f"ArtiMuse {num(r.get('artimuse_score'))} ({r.get('aesthetic_models') or 'no aesthetic models'}), "
                f"config {r['config_hash']}" + ("" if snap else " (snapshot missing)") + rejected_suffix(r))

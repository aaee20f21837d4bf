"""raw_pool [3.1.1]: where the file came from, its licence and hash, and the resolution screen."""

from curation.lineage.core import register_link_provider
from curation.lineage.providers._util import ManifestLinks, rejected_suffix


@register_link_provider
class RawPoolLinks(ManifestLinks):
    stage = "raw_pool"
    required = True
    title = "raw source"

    def summarize(self, ctx, r):
        return (f"{r['source_path']} (origin {r.get('origin') or 'unknown'}, licence {r['licence']}), "
                f"sha256 {r['sha256']}, {r.get('format')}, {r.get('width')}x{r.get('height')} "
                f"= {r.get('megapixels') or 0:.1f} MP, screen tier {r.get('screen_tier') or 'none'}, "
                f"shard {r['shard']}, config {r['config_hash']}" + rejected_suffix(r))

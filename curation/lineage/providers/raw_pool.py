"""raw_pool [3.1.1]: where the file came from, its licence and hash, and the resolution screen."""

from curation.lineage.core import Link, LinkProvider, register_link_provider
from curation.lineage.providers._util import record, rejected_suffix, status


@register_link_provider
class RawPoolLinks(LinkProvider):
    stage = "raw_pool"
    order = 10
    required = True
    title = "raw source"

    def links(self, ctx, ids):
        out = []
        for r in ctx.rows(self.stage, ids):
            where = record(r)
            summary = (f"{r['source_path']} (origin {r.get('origin') or 'unknown'}, licence {r['licence']}), "
                       f"sha256 {r['sha256']}, {r.get('format')}, {r.get('width')}x{r.get('height')} "
                       f"= {r.get('megapixels') or 0:.1f} MP, screen tier {r.get('screen_tier') or 'none'}, "
                       f"shard {r['shard']}, config {r['config_hash']}" + rejected_suffix(r))
            out.append(Link(self.stage, r["image_id"], status(r), summary, r, where))
        return out

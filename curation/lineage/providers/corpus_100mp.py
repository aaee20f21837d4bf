"""corpus_100mp [3.1.3-3.1.4]: SR tier, backend, tile settings and every final-filter score.

Upscaled images get their own id; the stage reports the (parent, child) edge so the walk
joins a released image to its raw source."""

from curation.lineage.core import Link, LinkProvider, register_link_provider
from curation.lineage.providers._util import num, record, rejected_suffix, status


@register_link_provider
class CorpusLinks(LinkProvider):
    stage = "corpus_100mp"
    required = True
    title = "100 MP corpus"

    def _rows(self, ctx, ids):
        key = frozenset(ids)
        return ctx.memo(("corpus_rows", key), lambda: {
            (r["image_id"], r["parent_id"], r["_manifest"]): r
            for r in ctx.rows(self.stage, ids) + ctx.rows(self.stage, ids, column="parent_id")
        })

    def edges(self, ctx, ids):
        return sorted({(r["parent_id"], r["image_id"]) for r in self._rows(ctx, ids).values()
                       if r.get("parent_id") and r["parent_id"] != r["image_id"]})

    def links(self, ctx, ids):
        out = []
        for r in self._rows(ctx, ids).values():
            if r["image_id"] not in ids:
                continue
            r = dict(r)
            where = record(r)
            if r.get("tier") == "archive":
                how = "archived as is (>= 100 MP)"
            else:
                how = (f"upscaled {r.get('scale')}x (tier {r.get('tier')}) from {r.get('parent_id')}, backend {r.get('backend')}"
                       f"{' (' + r['backend_detail'] + ')' if r.get('backend_detail') else ''}, "
                       f"tile {r.get('tile')} overlap {r.get('overlap')} ramp {r.get('ramp')}")
            checks = (f"seams max ratio {num(r.get('seam_max_ratio'))} over {r.get('seam_count')} seams"
                      f"{' FLAGGED' if r.get('seam_flagged') else ''}; consistency PSNR {num(r.get('psnr'), '.2f')} "
                      f"SSIM {num(r.get('ssim'), '.4f')} (block min {num(r.get('psnr_block_min'), '.2f')}/"
                      f"{num(r.get('ssim_block_min'), '.4f')}), LPIPS {num(r.get('lpips')) if r.get('lpips') is not None else r.get('lpips_reason') or 'n/a'}; "
                      f"regions {r.get('region_flagged')}/{r.get('region_patches')} flagged by {r.get('judge_backend')}; "
                      f"instances {r.get('instance_status')}") if r.get("checks") else "final filters not run"
            summary = (f"{how}; {r.get('file_format')} {r.get('width')}x{r.get('height')} = "
                       f"{r.get('megapixels') or 0:.1f} MP, sha256 {r.get('sha256')}; {checks}; config {r['config_hash']}"
                       + rejected_suffix(r))
            out.append(Link(self.stage, r["image_id"], status(r), summary, r, where))
        return out

"""captions [3.1.5, 3.1.4 instance check]: every field's provenance, the tags, the instances and
the instance artifact check of the image's captions record.

The link's details carry the record's parts a reader needs (provenance per field and per
instance, tags, instances without their masks) and ``record_sha256`` (what a release's
``caption_record`` pins); the whole record, masks included, is ``uhr captions IMAGE_ID``.
"""

import hashlib
import json

from curation.lineage.core import Link, LinkProvider, register_link_provider
from curation.lineage.providers._util import record, rejected_suffix, status


def provenance_text(prov: dict) -> str:
    """``field backend/model prompt <12 hex> status`` for every field, ``; ``-joined."""
    parts = []
    for k, p in sorted(prov.items()):
        who = f"{p.get('backend') or '-'}/{p.get('model') or '-'}"
        prompt = f" prompt {p['prompt_hash'][:12]}" if p.get("prompt_hash") else ""
        why = f" ({p['reason']})" if p.get("reason") and p.get("status") != "ok" else ""
        parts.append(f"{k} {who}{prompt} {p.get('status')}{why}")
    return "; ".join(parts)


@register_link_provider
class CaptionsLinks(LinkProvider):
    stage = "captions"
    required_with_captions = True
    title = "captions"

    def links(self, ctx, ids):
        out = []
        for r in ctx.rows(self.stage, ids):
            where = record(r)
            text = r.pop("record", None) or ""
            rec = json.loads(text) if text else {}
            inst = rec.get("instances") or []
            details = dict(r, record_sha256=hashlib.sha256(text.encode()).hexdigest() if text else None,
                           provenance=rec.get("provenance") or {},
                           tags=[t.get("label") if isinstance(t, dict) else t for t in rec.get("tags") or []],
                           tangible_tags=rec.get("tangible_tags") or [],
                           instances=[{k: v for k, v in i.items() if k != "mask_rle"} for i in inst])
            tags = details["tags"]
            flagged = sum(bool((i.get("artifact") or {}).get("artifact")) for i in inst)
            summary = (f"{len(tags)} tags ({', '.join(map(str, tags[:8]))}{', ...' if len(tags) > 8 else ''}), "
                       f"{len(inst)} instances; instance check {r.get('instance_decision') or 'n/a'} "
                       f"({r.get('instance_flagged') if r.get('instance_flagged') is not None else flagged} flagged, "
                       f"{r.get('instance_status') or 'n/a'}); long caption {r.get('long_words') or 0} words, "
                       f"short {r.get('short_words') or 0} words, complete {bool(r.get('caption_complete'))}; "
                       f"provenance: {provenance_text(details['provenance']) or 'none'}; "
                       f"record sha256 {str(details['record_sha256'])[:16]}, config {r['config_hash']}"
                       + rejected_suffix(r) + f"; full record: uhr captions {r['image_id']}")
            out.append(Link(self.stage, r["image_id"], status(r), summary, details, where))
        return out

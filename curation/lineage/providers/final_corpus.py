"""final_corpus and bench_split: whether the image is in the final corpus (and why not), and
whether PixVerve-Bench holds it out (then no release's training set contains it)."""

from curation.lineage.core import INFO, Link, LinkProvider, register_link_provider
from curation.lineage.providers._util import record, status


@register_link_provider
class FinalCorpusLinks(LinkProvider):
    stage = "final_corpus"
    required_with_captions = True
    title = "final corpus"

    def links(self, ctx, ids):
        out = []
        for r in ctx.rows(self.stage, ids):
            where = record(r)
            if r.get("passed"):
                summary = "in the final corpus (corpus passed, instance check passed, captions complete)"
            else:
                detail = f" ({r['reject_detail']})" if r.get("reject_detail") else ""
                summary = f"left out of the final corpus: {r.get('reject_reason')}{detail}"
            out.append(Link(self.stage, r["image_id"], status(r),
                            summary + f"; config {r['config_hash']}", r, where))
        return out


@register_link_provider
class BenchSplitLinks(LinkProvider):
    stage = "bench_split"
    title = "bench split"

    def links(self, ctx, ids):
        from curation.stages.final import SPLIT_FILE, load_split, split_dir

        split = ctx.memo("bench_split", lambda: load_split(ctx.layout))
        if not split:
            return []
        held = set(split.get("image_ids") or [])
        finals = {r["image_id"] for r in ctx.rows("final_corpus", ids) if r.get("passed")}
        where = str(split_dir(ctx.layout) / SPLIT_FILE)
        info = {k: split.get(k) for k in ("version", "rule", "seed", "n_requested", "n_final")}
        out = []
        for i in sorted(ids & (held | finals)):
            if i in held:
                summary = (f"held out for PixVerve-Bench (split {split.get('version')}, {split.get('rule')}): "
                           "in benchmark.jsonl and reference/, never in a release's training set")
            else:
                summary = f"training set: not in the bench split {split.get('version')}"
            out.append(Link(self.stage, i, INFO, summary, dict(info, held_out=i in held), where))
        return out

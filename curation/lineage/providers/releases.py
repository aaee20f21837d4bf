"""Releases that contain the image (``uhr release``): name, DVC hash, git tag."""

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curation.lineage.core import INFO, Link, LinkProvider, register_link_provider


@register_link_provider
class ReleaseLinks(LinkProvider):
    stage = "release"
    order = 90
    title = "releases"

    def links(self, ctx, ids):
        # memoised: the checkpoints provider asks for the same ids' releases again
        return ctx.memo(("release_links", frozenset(ids)), lambda: self._links(ctx, ids))

    def _links(self, ctx, ids):
        from curation.manifest import RELEASE
        from curation.release import releases_table

        entries = ctx.memo("release_entries", lambda: {e["name"]: e for e in releases_table(ctx.layout)})
        out = []
        for name, e in entries.items():
            p = ctx.layout.release_dir(name) / "manifest.parquet"
            if not p.exists():
                out.extend(Link(self.stage, i, "rejected", f"release {name}: manifest missing at {p}", {}, str(p))
                           for i in sorted(ids))
                continue
            git = e.get("git") or {}
            dvc = e.get("dvc") or {}
            for r in _release_rows(ctx, name, p, ids):
                summary = (f"in release {name} ({e['created_at']}, {e['n_images']} images, manifest sha256 "
                           f"{e['manifest_sha256'][:16]}), DVC {dvc.get('md5') or 'not tracked'}"
                           f"{' pushed to ' + dvc['remote_url'] if dvc.get('pushed') and dvc.get('remote_url') else ''}, "
                           f"git tag {git.get('tag') or 'none'}{' @ ' + git['commit'][:12] if git.get('commit') else ''}; "
                           f"licence {r['licence']}; captions {_captions(r)}")
                out.append(Link(self.stage, r["image_id"], INFO, summary, {"release": name, **r,
                                "release_entry": {k: e.get(k) for k in ("dvc", "git", "created_at")}}, str(p)))
        return out


def _release_rows(ctx, name: str, p, ids) -> list[dict]:
    """The release manifest's rows of ``ids``: by the id index (rows read by position from the
    row groups that hold them), else by a filtered read of the whole manifest."""
    from curation.lineage.index import RELEASE_PREFIX, StaleIndex, read_hits
    from curation.manifest import RELEASE

    idx = ctx.index(RELEASE_PREFIX + name)
    if idx is not None:
        for _ in range(2):
            hits = idx.lookup(RELEASE_PREFIX + name, ids)
            if not hits:
                return []
            if idx.verify(RELEASE_PREFIX + name, p.name):
                try:
                    return read_hits(p, hits, columns=RELEASE.names)
                except StaleIndex:
                    idx.index_file(RELEASE_PREFIX + name, p)
    return ds.dataset(str(p), schema=RELEASE).to_table(
        filter=pc.field("image_id").isin(pa.array(sorted(ids), pa.string()))).to_pylist()


def _captions(r: dict) -> str:
    if not r.get("caption_record"):
        return "none"
    import json

    from curation.captioning.answers import word_count

    ref = json.loads(r["caption_record"])
    return (f"{word_count(r.get('long_caption') or '')}-word long / {word_count(r.get('short_caption') or '')}-word "
            f"short caption, record sha256 {str(ref.get('record_sha256'))[:16]} in {ref.get('manifest')}")

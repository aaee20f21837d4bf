"""Asset ``corpus_release``: freeze the passed corpus into a named release (``uhr release NAME``).

Each materialisation is one release: manifest + release.json under ``releases/<name>/``,
blobs in the object store, the folder tracked by DVC and pushed, a git tag, an entry in the
releases table (and in Postgres table ``uhr_releases`` when ``DAGSTER_PG_HOST`` is set). The ``release_audit`` check re-reads everything (``uhr audit``) and fails
naming each broken image. The per-image lineage of the release is written as JSON lines and
linked from the metadata, with the first images inline.
"""

import json

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config,
                     MaterializeResult, MetadataValue, asset)

from assets._metadata import counts_table
from orchestration.resources import CurationSettings, DVCRemote, ObjectStoreResource, PostgresSettings

RELEASE_CODE_VERSION = "release-1"


class ReleaseConfig(Config):
    """``name``: the release name (immutable); ``tag``: make the git tag; ``push``: dvc push."""

    name: str
    tag: bool = True
    push: bool = True


def dvc_for(settings: CurationSettings, dvc: DVCRemote):
    """The DVC repo of the data root and the remote to push to (``{"name", "url", "endpoint_url"}``)."""
    from curation.dvc_repo import DvcRepo

    repo = DvcRepo.for_data_root(settings.layout().root, repo=dvc.repo, env=dvc.env())
    return repo, {"name": dvc.name, "url": dvc.remote_url(settings.data_root), "endpoint_url": dvc.endpoint_url}


def write_lineage_report(layout, name: str, store, batch: int = 10_000, keep: int = 50) -> tuple[str, list[dict]]:
    """Every image's lineage (JSON lines) under ``reports/release/<name>/``; returns the path and
    the stages of the release's first ``keep`` images. Written in batches of whole shards (a
    shard's manifests are read by one batch; memory holds one batch's links, not the release's),
    so the lines follow the shards, then the manifest order within a shard."""
    from curation.lineage import LineageContext, lineage_batch
    from curation.release import read_release_manifest

    t = read_release_manifest(layout, name, store).select(["image_id", "shard"])
    ids, shards = t.column("image_id").to_pylist(), t.column("shard").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: (shards[i] or "", i))
    first = set(ids[:keep])
    stages: dict[str, str] = {}
    ctx = LineageContext(layout, store)
    path = layout.report_dir("release", name) / "lineage.jsonl"
    with open(path, "w") as fh:
        for start in range(0, len(order), batch):
            chunk = [ids[i] for i in order[start:start + batch]]
            links = lineage_batch(ctx, chunk)
            for i in chunk:
                fh.write(json.dumps({"image_id": i, "links": [lk.as_dict() for lk in links[i]]}, default=str) + "\n")
                if i in first:
                    stages[i] = " > ".join(f"{lk.stage}:{lk.status}" for lk in links[i])
    return str(path), [{"image_id": i, "stages": stages[i]} for i in ids[:keep]]


@asset(
    deps=["final_corpus", "bench_split"],
    code_version=RELEASE_CODE_VERSION,
    group_name="release",
    kinds={"dvc", "parquet"},
    check_specs=[AssetCheckSpec("release_audit", asset="corpus_release",
                                description="uhr audit: every blob present with its hash, every stage record present "
                                            "and passed, every image with a source and licence.")],
    description="A named release of the final corpus minus the bench split: manifest (ids, hashes, captions, licences), blobs in "
                "the object store, DVC-tracked and pushed, git tag release/<name>, releases table entry.",
)
def corpus_release(context: AssetExecutionContext, config: ReleaseConfig, settings: CurationSettings,
                   store: ObjectStoreResource, dvc: DVCRemote, postgres: PostgresSettings) -> MaterializeResult:
    from curation.audit import audit_release
    from curation.release import SQL_TABLE, make_release, read_release_manifest, record_release_sql

    layout = settings.layout()
    s = store.store_or_default(settings.data_root)
    repo, remote = dvc_for(settings, dvc)
    # the lab's releases table (beside the one in the data root and the store) is make_release's last
    # step: when it fails, the release is taken back whole
    record = (lambda e: record_release_sql(postgres.url(), e)) if postgres.enabled else None
    entry = make_release(layout, config.name, s, dvc=repo, remote=remote, tag=config.tag, push=config.push,
                         log=context.log.info, record=record)
    lineage_path, lineage_rows = write_lineage_report(layout, config.name, s)
    rows = read_release_manifest(layout, config.name, s).slice(0, 50).to_pylist()  # the first 50, for the table
    report = audit_release(layout, config.name, s)
    dvc_info, git = entry.get("dvc") or {}, entry.get("git") or {}
    md = {
        "release": config.name,
        "dagster/row_count": entry["n_images"],
        "manifest_sha256": entry["manifest_sha256"],
        "already_existed": bool(entry.get("existing")),
        "dvc_md5": dvc_info.get("md5") or "not tracked",
        "dvc_remote": dvc_info.get("remote_url") or "none",
        "dvc_pushed": bool(dvc_info.get("pushed")),
        "git_tag": git.get("tag") or "none",
        "git_commit": git.get("commit") or "none",
        "store": MetadataValue.json(entry["store"]),
        "captions": entry["captions"],
        "releases_table": f"{layout.root / 'releases' / 'releases.parquet'}"
                          + (f" + {SQL_TABLE} in {postgres.masked_url()}" if postgres.enabled else ""),
        "by_tier": counts_table([[k, v] for k, v in entry["tiers"].items()], [("tier", "string"), ("images", "int")]),
        "licences": counts_table([[k, v] for k, v in entry["licences"].items()],
                                 [("licence", "string"), ("images", "int")]),
        "images": counts_table(
            [[r["image_id"], r["parent_id"], r["tier"], r["licence"], r["shard"], float(r["megapixels"] or 0)]
             for r in rows[:50]],
            [("image_id", "string"), ("parent_id", "string"), ("tier", "string"), ("licence", "string"),
             ("shard", "string"), ("megapixels", "float")]),
        "lineage": counts_table([[r["image_id"], r["stages"]] for r in lineage_rows[:50]],
                                [("image_id", "string"), ("stages", "string")]),
        "lineage_file": MetadataValue.path(lineage_path),
        "manifest": MetadataValue.path(str(layout.release_dir(config.name) / "manifest.parquet")),
    }
    d = report.as_dict()
    check = AssetCheckResult(
        check_name="release_audit", asset_key="corpus_release", passed=report.ok, severity=AssetCheckSeverity.ERROR,
        metadata={"images": report.n_images, "failures": len(report.failures),
                  "checks": MetadataValue.json(d["checks"]),
                  "first_failures": MetadataValue.json(d["failures"][:20])},
    )
    return MaterializeResult(metadata=md, check_results=[check])

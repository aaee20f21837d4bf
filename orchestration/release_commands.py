"""``uhr release``, ``uhr releases``, ``uhr lineage``, ``uhr audit``.

``release`` runs the ``corpus_release`` asset through Dagster on the data root's instance (so
the UI shows it, with its audit check); ``lineage`` and ``audit`` read manifests and releases
directly (from the object store too, with ``--sync``).
"""

from __future__ import annotations

import json
import sys

import click

_data_root = click.option("--data-root", default="data/demo", show_default=True, help="The data root.")


def _store(data_root: str):
    """The configured object store (env), else the embedded default ``<data_root>/store``."""
    from orchestration.resources import platform_resources_from_env

    return platform_resources_from_env()["store"].store_or_default(data_root)


def _layout(data_root: str, store, sync: bool):
    from curation.layout import DataLayout

    layout = DataLayout.at(data_root)
    if sync:
        from curation.store import sync_manifests

        n = sync_manifests(store, layout)
        click.echo(f"synced from {store.url()}: {n}", err=True)
    return layout


def run_release_job(defs, instance, name: str, tag: bool = True, push: bool = True):
    """Run ``release_job`` for ``name``; returns the materialisation metadata (plain values) and
    the ``release_audit`` check evaluation. A failed run raises RuntimeError with its root cause."""
    res = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": name, "tag": tag, "push": push}}}},
        instance=instance, raise_on_error=False)
    if not res.success:
        err = next((e.event_specific_data.error for e in res.all_events
                    if e.is_failure and getattr(e.event_specific_data, "error", None)), None)
        while err is not None and getattr(err, "cause", None) is not None:  # the root cause, not Dagster's wrapper
            err = err.cause
        why = err.message.strip().splitlines()[-1] if err else "see the Dagster run"
        raise RuntimeError(f"release {name} failed: {why}")
    md = {k: getattr(v, "value", v) for k, v in res.asset_materializations_for_node("corpus_release")[0].metadata.items()}
    return md, res.get_asset_check_evaluations()[0]


@click.command("release")
@click.argument("name")
@_data_root
@click.option("--profile", default="paper", show_default=True)
@click.option("--tag/--no-tag", default=True, show_default=True, help="Make the git tag release/NAME.")
@click.option("--push/--no-push", default=True, show_default=True, help="dvc push the release to the remote.")
def release_cmd(name: str, data_root: str, profile: str, tag: bool, push: bool) -> None:
    """Freeze the passed corpus into release NAME (manifest, blobs, DVC, git tag, releases table)."""
    import importlib

    from dagster import DagsterInstance

    from orchestration.pipeline import set_env

    set_env(data_root, profile)
    import orchestration.definitions as definitions

    definitions = importlib.reload(definitions)
    try:
        md, check = run_release_job(definitions.defs, DagsterInstance.get(), name, tag=tag, push=push)
    except RuntimeError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"release {name}: {md['dagster/row_count']} images, manifest sha256 {md['manifest_sha256']}")
    click.echo(f"  dvc {md['dvc_md5']} -> {md['dvc_remote']} (pushed: {md['dvc_pushed']}); git tag {md['git_tag']} "
               f"@ {md['git_commit'][:12]}")
    click.echo(f"  lineage: {md['lineage_file']}")
    click.echo(f"  audit: {'OK' if check.passed else 'FAILED'} ({check.metadata['failures'].value} failures)")
    if not check.passed:
        sys.exit(1)


@click.command("releases")
@_data_root
@click.option("--json", "as_json", is_flag=True)
@click.option("--sync", is_flag=True, help="Fetch the releases table from the object store first.")
def releases_cmd(data_root: str, as_json: bool, sync: bool) -> None:
    """List the releases table."""
    from curation.release import releases_table

    layout = _layout(data_root, _store(data_root), sync)
    table = releases_table(layout)
    if as_json:
        click.echo(json.dumps(table, indent=1))
        return
    for e in table:
        click.echo(f"{e['name']:<20} {e['created_at']}  {e['n_images']:>6} images  manifest {e['manifest_sha256'][:12]}  "
                   f"dvc {(e.get('dvc') or {}).get('md5') or '-'}  tag {(e.get('git') or {}).get('tag') or '-'}")
    if not table:
        click.echo(f"no releases under {layout.root}/releases")


@click.command("lineage")
@click.argument("image_id")
@_data_root
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow, for checkpoints trained on the image's releases (env MLFLOW_TRACKING_URI).")
@click.option("--sync", is_flag=True, help="Fetch manifests and releases from the object store first.")
def lineage_cmd(image_id: str, data_root: str, as_json: bool, tracking_uri: str | None, sync: bool) -> None:
    """The whole chain of one image: raw source -> scores and thresholds -> SR and final
    filters -> releases -> checkpoints (an id, or a unique prefix of at least 6 characters)."""
    from curation.lineage import LineageContext, lineage, link_providers, resolve_image_id

    store = _store(data_root)
    ctx = LineageContext(_layout(data_root, store, sync), store, tracking_uri)
    try:
        full = resolve_image_id(ctx, image_id)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("'\""))
    lin = lineage(ctx, full)
    if as_json:
        click.echo(json.dumps(lin.as_dict(), indent=1, default=str))
        return
    chain = " -> ".join(b for _, b in lin.edges) if lin.edges else ""
    click.echo(f"image {full}" + (f"  (derived: {lin.edges[0][0]} -> {chain})" if lin.edges else ""))
    titles = {p.stage: p.title or p.stage for p in link_providers()}
    by_stage = lin.by_stage()
    for p in link_providers():
        links = by_stage.get(p.stage, [])
        if not links:
            if p.required:
                click.echo(f"  [{titles[p.stage]}] MISSING: no {p.stage} record")
            continue
        for lk in links:
            click.echo(f"  [{titles[p.stage]}] {lk.status.upper():<8} {lk.image_id}: {lk.summary}")
            if lk.record:
                click.echo(f"      record: {lk.record}")


@click.command("audit")
@click.argument("release")
@_data_root
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify-hashes/--no-verify-hashes", default=True, show_default=True,
              help="Re-hash every blob (else: presence only).")
@click.option("--sync", is_flag=True, help="Fetch manifests and releases from the object store first.")
def audit_cmd(release: str, data_root: str, as_json: bool, verify_hashes: bool, sync: bool) -> None:
    """Check every image of RELEASE; exit 1 naming each failure."""
    from curation.audit import audit_release
    from curation.release import read_release_manifest

    store = _store(data_root)
    layout = _layout(data_root, store, sync)
    try:
        n = read_release_manifest(layout, release, store).num_rows
    except Exception:
        n = 0
    with click.progressbar(length=max(n, 1), label=f"audit {release}", file=sys.stderr) as bar:
        report = audit_release(layout, release, store, verify_hashes=verify_hashes, progress=bar.update)
    click.echo(json.dumps(report.as_dict(), indent=1) if as_json else report.text())
    if not report.ok:
        sys.exit(1)


COMMANDS = [release_cmd, releases_cmd, lineage_cmd, audit_cmd]

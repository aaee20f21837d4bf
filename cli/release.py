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
_sync = click.option("--sync", is_flag=True, help="Fetch manifests and releases from the object store first.")


def _store_and_layout(data_root: str, sync: bool):
    """The configured object store (else ``<data_root>/store``) and the data root's layout, synced
    from the store first with ``sync``."""
    from curation.layout import DataLayout
    from orchestration.resources import platform_resources_from_env

    store = platform_resources_from_env()["store"].store_or_default(data_root)
    layout = DataLayout.at(data_root)
    if sync:
        from curation.store import sync_manifests

        click.echo(f"synced from {store.url()}: {sync_manifests(store, layout)}", err=True)
    return store, layout


@click.command("release")
@click.argument("name")
@_data_root
@click.option("--profile", default="paper", show_default=True)
@click.option("--tag/--no-tag", default=True, show_default=True, help="Make the git tag release/NAME.")
@click.option("--push/--no-push", default=True, show_default=True, help="dvc push the release to the remote.")
def release_cmd(name: str, data_root: str, profile: str, tag: bool, push: bool) -> None:
    """Freeze the passed corpus into release NAME (manifest, blobs, DVC, git tag, releases table)."""
    from curation.release import check_name, release_summary

    check_name(name)  # before the Dagster run starts: nothing written for a bad name
    from orchestration.runs import definitions_for, instance_for, run_release_job

    instance = instance_for(data_root)
    try:
        md, check = run_release_job(definitions_for(data_root, profile=profile), instance, name, tag=tag, push=push)
    except RuntimeError as exc:
        raise click.ClickException(str(exc))
    finally:
        instance.dispose()
    click.echo(release_summary(name, md, check.passed, check.metadata["failures"].value))
    if not check.passed:
        sys.exit(1)


@click.command("releases")
@_data_root
@click.option("--json", "as_json", is_flag=True)
@click.option("--sync", is_flag=True, help="Fetch the releases table from the object store first.")
def releases_cmd(data_root: str, as_json: bool, sync: bool) -> None:
    """List the releases table."""
    from curation.release import releases_table, releases_text

    _, layout = _store_and_layout(data_root, sync)
    table = releases_table(layout)
    click.echo(json.dumps(table, indent=1) if as_json else releases_text(layout, table))


@click.command("lineage")
@click.argument("image_id")
@_data_root
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow, for checkpoints trained on the image's releases (env MLFLOW_TRACKING_URI; default: the data "
                   "root's mlflow/mlflow.db when it exists).")
@_sync
def lineage_cmd(image_id: str, data_root: str, as_json: bool, tracking_uri: str | None, sync: bool) -> None:
    """The whole chain of one image: raw source -> scores and thresholds -> SR and final
    filters -> releases -> checkpoints (an id, or a unique prefix of at least 6 characters)."""
    from curation.lineage import LineageContext, image_lineage, lineage_text

    store, layout = _store_and_layout(data_root, sync)
    default_db = layout.root / "mlflow" / "mlflow.db"  # where training and bench runs log without a server
    if tracking_uri is None and default_db.exists():
        tracking_uri = f"sqlite:///{default_db.resolve()}"
    try:
        full, lin = image_lineage(LineageContext(layout, store, tracking_uri), image_id)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("'\""))
    click.echo(json.dumps(lin.as_dict(), indent=1, default=str) if as_json else lineage_text(lin, full))


@click.command("audit")
@click.argument("release")
@_data_root
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify-hashes/--no-verify-hashes", default=True, show_default=True,
              help="Re-hash every blob (else: presence only).")
@_sync
def audit_cmd(release: str, data_root: str, as_json: bool, verify_hashes: bool, sync: bool) -> None:
    """Check every image of RELEASE; exit 1 naming each failure."""
    from curation.audit import audit_release
    from curation.release import check_name, release_size

    check_name(release)  # traversal (v1/../v1), paths, newlines: refused before anything is read
    store, layout = _store_and_layout(data_root, sync)
    n = release_size(layout, release, store)
    with click.progressbar(length=max(n, 1), label=f"audit {release}", file=sys.stderr) as bar:
        report = audit_release(layout, release, store, verify_hashes=verify_hashes, progress=bar.update)
    click.echo(json.dumps(report.as_dict(), indent=1) if as_json else report.text())
    if not report.ok:
        sys.exit(1)


COMMANDS = [release_cmd, releases_cmd, lineage_cmd, audit_cmd]

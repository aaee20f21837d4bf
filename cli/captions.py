"""``uhr captions`` (one image's whole caption record with provenance) and ``uhr export-training``
(the final corpus minus the bench split as a diffusers image folder). Thin over
:mod:`curation.captioning.export`."""

from __future__ import annotations

import json

import click

_data_root = click.option("--data-root", default="data/demo", show_default=True, help="The data root.")


@click.command("captions")
@click.argument("image_id")
@_data_root
@click.option("--json", "as_json", is_flag=True, help="The whole record (masks included) as one JSON object.")
def captions_cmd(image_id: str, data_root: str, as_json: bool) -> None:
    """The caption record of IMAGE_ID (an id or a unique prefix of at least 6 characters): tags,
    instances (box, mask, area, description, importance, artifact), aesthetics analysis, long and
    short caption, every field's provenance (backend, model, prompt hash, status), the instance
    check, final-corpus and bench-split membership."""
    from curation.captioning.export import caption_record_for, caption_record_text
    from curation.layout import DataLayout

    try:
        rec = caption_record_for(DataLayout.at(data_root), image_id)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("'\""))
    click.echo(json.dumps(rec, indent=1, ensure_ascii=False) if as_json else caption_record_text(rec))


@click.command("export-training")
@click.argument("out_dir")
@_data_root
@click.option("--release", default=None, help="Export this release's rows (default: the final corpus now).")
@click.option("--caption", type=click.Choice(["long", "short"]), default="long", show_default=True,
              help="The caption written as `text` (both are written as their own columns).")
def export_training_cmd(out_dir: str, data_root: str, release: str | None, caption: str) -> None:
    """Write the final corpus minus the PixVerve-Bench images to OUT_DIR as a diffusers image
    folder (metadata.jsonl + hard-linked images; `--train_data_dir OUT_DIR`)."""
    from curation.captioning.export import export_training_set
    from curation.layout import DataLayout
    from curation.release import ReleaseError, check_name

    store = None
    if release:
        check_name(release)  # before the store is opened or anything is written
        from orchestration.resources import platform_resources_from_env

        store = platform_resources_from_env()["store"].store_or_default(data_root)
    try:
        out = export_training_set(DataLayout.at(data_root), out_dir, caption=caption, release=release, store=store)
    except ReleaseError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"{out['n_images']} images -> {out['metadata']} (text = {caption} caption; "
               f"{out['bench_held_out']} bench image(s) held out; linked {out['linked']}, symlinked "
               f"{out['symlinked']}, fetched {out['fetched']}, already there {out['present']}, removed {out['removed']})")


COMMANDS = [captions_cmd, export_training_cmd]

"""``uhr upscale`` and ``uhr seam-check`` (the 100 MP corpus: tiled SR of one image, the seam check)."""

from __future__ import annotations

import json
import sys

import click

from cli.types import POSITIVE_INT, FiniteFloat


@click.command("upscale")
@click.argument("src", metavar="IN", type=click.Path())  # checked by the reader contract (reason + detail)
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--scale", type=click.Choice(["2", "4"]), required=True, help="Upscaling factor.")
@click.option("--backend", "backend_name", default="lanczos", show_default=True,
              help="SR backend: lanczos, realesrgan, diffusers.")
@click.option("--tile", type=int, default=384, show_default=True,
              help="Tile stride in OUTPUT pixels (seams at its multiples; the paper's seam check uses 384).")
@click.option("--overlap", type=int, default=32, show_default=True,
              help="Blend band in OUTPUT pixels, centred on each seam (multiple of 2*scale).")
@click.option("--pad", type=int, default=None, help="Context in INPUT pixels around each tile (default: backend's).")
@click.option("--ramp", type=click.Choice(["cosine", "linear"]), default="cosine", show_default=True)
@click.option("--prompt", default=None, help="Caption or tags for text-guided backends.")
@click.option("--workers", type=POSITIVE_INT, default=1, show_default=True, help="Tile threads (thread-safe backends).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
def upscale_cmd(src, dst, scale, backend_name, tile, overlap, pad, ramp, prompt, workers, as_json):
    """Upscale IN by --scale with a tiled, streamed backend and write OUT in the format its
    suffix names (.tif/.tiff tiled zstd, .png, .jxl, .webp)."""
    from curation.upscale.backends import BackendUnavailable, create_backend
    from curation.upscale.storage import format_for_path, open_source
    from curation.upscale.tiles import TiledUpscaler, TileSpec

    try:
        format_for_path(dst)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="OUT") from None
    try:
        backend = create_backend(backend_name, int(scale))
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--backend") from None
    except BackendUnavailable as exc:
        raise click.ClickException(f"backend {backend_name!r} unavailable: {exc}") from None
    try:
        engine = TiledUpscaler(backend, TileSpec(tile=tile, overlap=overlap, pad=pad, ramp=ramp), workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    from curation.imageio import ImageReadError, default_max_pixels

    backend.begin_image(prompt=prompt)
    try:  # IN is an input image: the reader contract with the input pixel limit (io.max_pixels)
        source = open_source(src, max_pixels=default_max_pixels())
    except ImageReadError as exc:
        raise click.ClickException(f"{src}: {exc.reason}: {exc.detail}") from None
    try:
        n_tiles = engine.plan(source.height, source.width).n_tiles
        with click.progressbar(length=n_tiles, label=f"upscale {scale}x ({n_tiles} tiles)", file=sys.stderr) as bar:
            info = engine.upscale_file(source, dst, progress=bar.update)
    except ValueError as exc:  # e.g. WebP beyond its 16383-px side limit
        raise click.ClickException(str(exc)) from None
    finally:
        source.close()
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        click.echo(f"{dst}: {info['width']}x{info['height']} {info['format']} {info['bytes']} bytes")


@click.command("seam-check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the CLI contract).")
@click.option("--stride", type=POSITIVE_INT, default=384, show_default=True, help="Tile stride whose seams are checked.")
@click.option("--threshold", type=FiniteFloat(min=0, min_open=True), default=2.5, show_default=True, help="r_t: flag if any seam ratio exceeds it.")
def seam_check_cmd(paths, as_json, stride, threshold):
    """Gradient ratio across every seam on the --stride grid; one line per image:
    ``{"path", "max_ratio", "seams", "flagged"}``. Exit status 0 even when flagged."""
    from curation.final_filters.seams import seam_check_record

    for p in paths:
        rec = seam_check_record(p, stride=stride, r_t=threshold)
        if as_json:
            click.echo(json.dumps(rec))
        else:
            state = "ERROR" if rec.get("error") else ("FLAGGED" if rec["flagged"] else "ok")
            click.echo(f"{p}: {state} max_ratio={rec['max_ratio']} seams={rec['seams']}"
                       + (f" ({rec['error']})" if rec.get("error") else ""))


COMMANDS = [upscale_cmd, seam_check_cmd]

"""``uhr`` commands of the curation library: ``score-image`` and ``make-raw-pool``."""

from __future__ import annotations

import json
import sys

import click

SCORE_KEYS = (
    "path", "image_id", "width", "height", "megapixels", "exposure_fraction",
    "laplacian_var", "flat_fraction", "entropy", "screening", "verdict",
)


def score_image_record(path: str, cfg) -> dict:
    """The ``uhr score-image`` record of one file (exactly SCORE_KEYS)."""
    from curation import reasons
    from curation.imageio import ImageReadError, content_hash, decode_rgb, image_id_from_hash, probe, to_grey
    from curation.purify import first_absolute_reason
    from curation.scores import absolute_verdicts, purification_scores
    from curation.screening import screen

    rec = dict.fromkeys(SCORE_KEYS)
    rec["path"] = path
    max_pixels = int(cfg.get("io.max_pixels"))
    try:
        rec["image_id"] = image_id_from_hash(content_hash(path))
    except OSError as exc:
        rec["verdict"] = reasons.UNREADABLE
        rec["error"] = str(exc)
        return rec
    try:
        head = probe(path, max_pixels)
        rec.update(width=head.width, height=head.height, megapixels=head.pixels / 1e6)
        rec["screening"], _ = screen(head.width, head.height, cfg.screen_bounds())
        grey = to_grey(decode_rgb(path, max_pixels, head))
    except ImageReadError as exc:
        rec["verdict"] = exc.reason
        return rec
    s = purification_scores(grey, cfg["purification"])
    v = absolute_verdicts(s, cfg["purification"])
    rec.update(
        exposure_fraction=s.exposure_fraction,
        laplacian_var=s.laplacian_var,
        flat_fraction=s.flat_fraction,
        entropy=s.entropy,
    )
    if rec["screening"] != reasons.PASS:
        rec["verdict"] = rec["screening"]
    else:
        rec["verdict"] = first_absolute_reason(
            {"pass_exposure": v["exposure"], "pass_sharpness": v["sharpness"], "pass_flatness": v["flatness"]}
        ) or reasons.PASS
    return rec


@click.command("score-image")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the CLI contract).")
@click.option("--profile", default="paper", show_default=True, help="Config profile (paper, demo, test or a YAML path).")
def score_image_cmd(paths: tuple[str, ...], as_json: bool, profile: str) -> None:
    """Purification scores and per-image verdict of each PATH (relative cuts excluded)."""
    from curation import reasons
    from curation.config import load_config

    cfg = load_config(profile)
    failed = 0
    for path in paths:
        rec = score_image_record(path, cfg)
        if rec["verdict"] in reasons.FILE_REASONS:
            failed += 1
        if as_json:
            click.echo(json.dumps({k: rec[k] for k in SCORE_KEYS}))
        else:
            scores = ", ".join(
                f"{k}={rec[k]:.4g}" for k in ("exposure_fraction", "laplacian_var", "flat_fraction", "entropy")
                if rec[k] is not None
            )
            click.echo(f"{path}: {rec['verdict']} ({rec['width']}x{rec['height']}) {scores}")
    if failed == len(paths):
        sys.exit(1)


@click.command("make-raw-pool")
@click.argument("out", type=click.Path())
@click.option("--n", "n", type=int, default=None, help="Number of files (default: the profile's synth.n).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--profile", default="demo", show_default=True)
def make_raw_pool_cmd(out: str, n: int | None, seed: int, profile: str) -> None:
    """Generate a labelled synthetic raw pool (shard folders + labels.jsonl) under OUT."""
    from curation.config import load_config
    from curation.synth import make_raw_pool

    cfg = load_config(profile)
    summary = make_raw_pool(out, n or int(cfg.get("synth.n")), seed, cfg, progress=True)
    click.echo(json.dumps(summary, indent=2, default=str))


COMMANDS = [score_image_cmd, make_raw_pool_cmd]

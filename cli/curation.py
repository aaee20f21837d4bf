"""``uhr score-image`` and ``uhr make-raw-pool``: the purification scores of files, a synthetic raw pool."""

from __future__ import annotations

import json
import sys

import click


@click.command("score-image")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the CLI contract).")
@click.option("--profile", default="paper", show_default=True, help="Config profile (paper, demo, test or a YAML path).")
def score_image_cmd(paths: tuple[str, ...], as_json: bool, profile: str) -> None:
    """Purification scores and per-image verdict of each PATH (relative cuts excluded); a file that
    cannot be used says why (``reject_detail``). Names print escaped (``\\xNN``) when they are not
    UTF-8 or hold control characters."""
    from curation import reasons
    from curation.config import load_config
    from curation.purify import SCORE_KEYS, score_image_record

    from curation.names import safe_text

    cfg = load_config(profile)
    failed = 0
    for path in paths:
        rec = score_image_record(path, cfg)
        failed += rec["verdict"] in reasons.FILE_REASONS
        # printed names and details are escaped (curation.names): one line per file, valid UTF-8,
        # no control character from a hostile name; decode_name gives the bytes back
        rec["path"] = path = safe_text(path)
        if rec.get("reject_detail"):
            rec["reject_detail"] = safe_text(str(rec["reject_detail"]))
        if as_json:
            click.echo(json.dumps({k: rec[k] for k in SCORE_KEYS}))
        else:
            scores = ", ".join(f"{k}={rec[k]:.4g}" for k in ("exposure_fraction", "laplacian_var", "flat_fraction",
                                                              "entropy") if rec[k] is not None)
            why = f" -- {rec['reject_detail']}" if rec.get("reject_detail") else ""
            parts = [f"{path}: {rec['verdict']}"]
            parts += [f"({rec['width']}x{rec['height']})"] if rec["width"] else []
            parts += [scores] if scores else []
            click.echo(" ".join(parts) + why)
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
    if n is not None and n < 1:
        raise click.ClickException(f"--n {n}: the number of files must be at least 1")
    try:
        summary = make_raw_pool(out, n or int(cfg.get("synth.n")), seed, cfg, progress=True)
    except ValueError as exc:  # e.g. too few files for one of each class
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2, default=str))


COMMANDS = [score_image_cmd, make_raw_pool_cmd]

"""What the captions stage hands on: one image's whole caption record, and the training set.

* :func:`caption_record_for` -- the captions record of one image (an id or a unique prefix of at
  least 6 characters; a raw parent's id finds its corpus image), with the per-field provenance,
  the instance check, final-corpus membership and bench-split membership (``uhr captions``);
* :func:`export_training_set` -- the final corpus minus the PixVerve-Bench ids (or a release's
  rows, ``release=NAME``) as the image folder diffusers' text-to-image fine-tuning scripts read
  (``--train_data_dir``, the ``imagefolder`` loader): the images, hard-linked (a symlink when the
  folder is on another file system; fetched from the object store when not on this worker),
  and ``metadata.jsonl``, one JSON per line: ``file_name``, ``text`` (the chosen caption:
  ``--caption_column text``), ``short_caption``, ``long_caption``, ``image_id``. Idempotent:
  a rerun links nothing again, rewrites the same metadata and removes only files an earlier
  export listed that are no longer in the set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from curation.layout import DataLayout
from curation.manifest import read_manifest

METADATA_FILE = "metadata.jsonl"
CAPTION_CHOICES = ("long", "short")


# -- one image's record ------------------------------------------------------------------------

def _caption_ids(layout: DataLayout) -> dict[str, str]:
    """``{image_id: captions manifest path}`` over every shard."""
    out: dict[str, str] = {}
    for p in layout.manifests("captions"):
        for i in read_manifest(p).column("image_id").to_pylist():
            out[i] = str(p)
    return out


def resolve_caption_id(layout: DataLayout, prefix: str) -> str:
    """A captioned image's full id from its id or a unique prefix (>= 6 characters); a raw pool
    id (the parent of an upscaled corpus image) resolves to its captioned child."""
    from curation.lineage.core import check_image_id

    prefix = check_image_id(prefix)  # hex only: a path or '..' is refused by name
    ids = _caption_ids(layout)
    if not ids:
        raise KeyError(f"no captions manifests under {layout.root}/manifests/captions: materialise captions first")
    found = {i for i in ids if i.startswith(prefix)}
    if not found:  # a parent id: its corpus children that were captioned
        for p in layout.manifests("corpus_100mp"):
            for r in read_manifest(p).select(["image_id", "parent_id"]).to_pylist():
                if r["parent_id"].startswith(prefix) and r["image_id"] in ids:
                    found.add(r["image_id"])
    if not found:
        raise KeyError(f"no captioned image id starting with {prefix!r} in {layout.root}/manifests/captions")
    if len(found) > 1:
        raise KeyError(f"{prefix!r} is ambiguous: {', '.join(sorted(found)[:5])}")
    return found.pop()


def caption_record_for(layout: DataLayout, image_id: str) -> dict:
    """The whole caption record of one image (id or unique prefix) as one JSON-able dict.

    Keys: ``image_id``, ``shard``, ``manifest``, ``passed`` / ``reject_reason`` /
    ``reject_detail`` (the captions row), ``instance_check``, ``quality``, ``final_corpus``,
    ``bench_split``, ``width``, ``height``, ``tags``, ``tangible_tags``, ``instances`` (each
    ``instance_id``, ``label``, ``box``, ``mask_rle``, ``area``, ``description``, ``importance``,
    ``artifact``, its own ``provenance``), ``aesthetics_analysis``, ``long_caption``,
    ``short_caption``, ``provenance`` (per field: ``backend``, ``model``, ``prompt_hash``,
    ``status``, ``reason``), ``params``, ``backends``, ``config_hash``, ``code_version``.
    """
    from curation.stages.final import load_split

    full = resolve_caption_id(layout, image_id)
    row, where = None, None
    for p in layout.manifests("captions"):
        t = read_manifest(p)
        hit = [r for r in t.to_pylist() if r["image_id"] == full]
        if hit:
            row, where = hit[0], p
            break
    if row is None:  # resolve found it: only a concurrent rewrite gets here
        raise KeyError(f"no captions row for {full}")
    rec = json.loads(row["record"]) if row.get("record") else {}
    final = None
    for p in layout.manifests("final_corpus"):
        for r in read_manifest(p).select(["image_id", "passed", "reject_reason", "reject_detail"]).to_pylist():
            if r["image_id"] == full:
                final = {"passed": r["passed"], "reject_reason": r["reject_reason"],
                         "reject_detail": r["reject_detail"], "manifest": layout.rel(p)}
    split = load_split(layout)
    out = {
        "image_id": full, "shard": row["shard"], "manifest": layout.rel(where),
        "passed": row["passed"], "reject_reason": row.get("reject_reason"), "reject_detail": row.get("reject_detail"),
        "instance_check": {k: row.get(f"instance_{k}") for k in ("status", "decision", "flagged", "passed")},
        "quality": {k: row.get(k) for k in ("caption_complete", "instance_coverage", "noun_match",
                                            "long_words", "short_words")},
        "caption_failures": json.loads(row["caption_failures"]) if row.get("caption_failures") else {},
        "final_corpus": final,
        "bench_split": ({"held_out": full in set(split.get("image_ids") or []), "version": split.get("version")}
                        if split else None),
        "width": rec.get("width"), "height": rec.get("height"),
        "tags": rec.get("tags") or [], "tangible_tags": rec.get("tangible_tags") or [],
        "instances": rec.get("instances") or [], "aesthetics_analysis": rec.get("aesthetics_analysis"),
        "long_caption": rec.get("long_caption", row.get("long_caption")),
        "short_caption": rec.get("short_caption", row.get("short_caption")),
        "provenance": rec.get("provenance") or {}, "params": rec.get("params") or {},
        "backends": json.loads(row["backends"]) if row.get("backends") else {},
        "config_hash": row["config_hash"], "code_version": row["code_version"],
    }
    return out


def _prov(p: dict | None) -> str:
    if not p:
        return "no provenance"
    s = f"{p.get('backend') or '-'}/{p.get('model') or '-'}"
    if p.get("prompt_hash"):
        s += f" prompt {p['prompt_hash'][:12]}"
    s += f" {p.get('status')}"
    if p.get("reason"):
        s += f" ({p['reason']})"
    return s


def caption_record_text(d: dict, caption_chars: int | None = None) -> str:
    """:func:`caption_record_for`'s dict as text: verdicts, provenance per field, tags, instances
    (box, area, importance, mask RLE size, description, artifact, provenance), aesthetics, captions."""
    def cut(t):
        t = t or "(none)"
        return t if caption_chars is None or len(t) <= caption_chars else t[:caption_chars] + " ..."

    ic, fin, bench = d["instance_check"], d.get("final_corpus"), d.get("bench_split")
    lines = [
        f"image {d['image_id']} ({d['width']}x{d['height']}), shard {d['shard']}, record {d['manifest']}",
        f"  captions: {'PASSED' if d['passed'] else 'REJECTED: ' + str(d['reject_reason'])}"
        + (f" ({d['reject_detail']})" if d.get("reject_detail") else "")
        + f"; config {d['config_hash']}, code {d['code_version']}",
        f"  instance check: {ic['decision']} ({ic['flagged']} flagged, {ic['status']})",
        "  final corpus: " + ("no final_corpus row" if fin is None else "in" if fin["passed"]
                              else f"out: {fin['reject_reason']}" + (f" ({fin['reject_detail']})" if fin.get("reject_detail") else "")),
        "  bench split: " + ("none yet" if bench is None else
                             f"{'HELD OUT for PixVerve-Bench' if bench['held_out'] else 'training set'} (split {bench['version']})"),
        "  provenance:",
    ]
    lines += [f"    {k:<20} {_prov(p)}" for k, p in sorted(d["provenance"].items())]
    tags = [t.get("label") if isinstance(t, dict) else str(t) for t in d["tags"]]
    lines.append(f"  tags ({len(tags)}): {', '.join(tags)}")
    lines.append(f"  tangible tags ({len(d['tangible_tags'])}): {', '.join(d['tangible_tags'])}")
    lines.append(f"  instances ({len(d['instances'])}):")
    for inst in d["instances"]:
        rle = inst.get("mask_rle") or {}
        art = inst.get("artifact") or {}
        lines.append(f"    {inst.get('instance_id')} {inst.get('label')!r}: box {inst.get('box')}, area {inst.get('area')}, "
                     f"importance {inst.get('importance')}, mask RLE {rle.get('size')} ({len(str(rle.get('counts', '')))} chars)")
        lines.append(f"      description: {cut(inst.get('description'))}")
        if art:
            lines.append(f"      artifact: {bool(art.get('artifact'))} ({art.get('reason')})")
        for k, p in sorted((inst.get("provenance") or {}).items()):
            lines.append(f"      {k:<12} {_prov(p)}")
    aes = d.get("aesthetics_analysis") or {}
    lines.append("  aesthetics analysis:" + ("" if aes else " none"))
    lines += [f"    {k}: {v}" for k, v in sorted(aes.items())]
    lines.append(f"  short caption: {cut(d['short_caption'])}")
    lines.append(f"  long caption: {cut(d['long_caption'])}")
    return "\n".join(lines)


# -- the training set ----------------------------------------------------------------------------

def _link(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        os.symlink(os.path.abspath(src), dst)
        return "symlinked"


def _same(dst: Path, src: Path) -> bool:
    try:
        return os.path.samefile(dst, src)
    except OSError:
        return False


def export_training_set(layout: DataLayout, out_dir, caption: str = "long", release: str | None = None,
                        store=None) -> dict:
    """Write the training image folder (see the module doc) to ``out_dir``; returns counts.

    ``release=None``: the data root's final corpus minus the bench split now
    (:func:`curation.release.release_rows`); ``release=NAME``: that release's rows and captions
    (images fetched from ``store`` when their corpus file is not on this worker).
    """
    from curation.release import ReleaseError, read_release_info, read_release_manifest, release_plan
    from curation.store import blob_key

    if caption not in CAPTION_CHOICES:
        raise ValueError(f"caption must be one of {CAPTION_CHOICES}, not {caption!r}")
    if release is None:
        rows, plan = release_plan(layout)
        if plan["source"] != "final_corpus":
            raise ReleaseError(f"no final_corpus manifests under {layout.root}/manifests: run captions and "
                               "final_corpus first (a training set needs captions)")
        held_out = plan["bench_split"]["n_held_out"]
    else:
        rows = read_release_manifest(layout, release, store).to_pylist()
        info = read_release_info(layout, release, store) or {}
        if any(not r.get("long_caption") or not r.get("short_caption") for r in rows):
            raise ReleaseError(f"release {release} has images without captions (made before the captions stage): "
                               "nothing to train a text-to-image model on")
        held_out = (info.get("bench_split") or {}).get("n_held_out")
    local = {r["image_id"]: r["output_path"] for p in layout.manifests("corpus_100mp")
             for r in read_manifest(p).select(["image_id", "output_path", "passed"]).to_pylist() if r["passed"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / METADATA_FILE
    before = set()
    if meta_path.exists():
        for line in meta_path.read_text().splitlines():
            try:
                before.add(json.loads(line)["file_name"])
            except (ValueError, KeyError):
                continue
    counts = {"linked": 0, "symlinked": 0, "fetched": 0, "present": 0, "removed": 0}
    lines, names = [], set()
    for r in sorted(rows, key=lambda r: r["image_id"]):
        src = layout.resolve(local.get(r["image_id"]))
        suffix = Path(local[r["image_id"]]).suffix if r["image_id"] in local else f".{(r.get('file_format') or 'tif').lower()}"
        name = f"{r['image_id']}{suffix}"
        dst = out / name
        names.add(name)
        if src is not None and src.is_file():
            if _same(dst, src):
                counts["present"] += 1
            else:
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                counts[_link(src, dst)] += 1
        elif dst.is_file() and not dst.is_symlink() and dst.stat().st_size == (r.get("file_bytes") or dst.stat().st_size):
            counts["present"] += 1  # fetched by an earlier export
        elif store is not None and store.exists(blob_key(r["sha256"])):
            if dst.is_symlink():
                dst.unlink()
            store.get_file(blob_key(r["sha256"]), dst)
            counts["fetched"] += 1
        else:
            raise ReleaseError(f"image {r['image_id']}: no corpus file on this worker"
                               + (f" and no blob {blob_key(r['sha256'])} in {store.url('blobs')}" if store else
                                  " (pass the object store to fetch it)"))
        chosen = r["long_caption"] if caption == "long" else r["short_caption"]
        lines.append(json.dumps({"file_name": name, "text": chosen, "short_caption": r["short_caption"],
                                 "long_caption": r["long_caption"], "image_id": r["image_id"]}, ensure_ascii=False))
    for stale in sorted(before - names):
        p = out / stale
        if p.is_symlink() or p.is_file():
            p.unlink()
            counts["removed"] += 1
    tmp = meta_path.with_name(f".{METADATA_FILE}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    os.replace(tmp, meta_path)
    return {"out_dir": str(out), "metadata": str(meta_path), "n_images": len(lines), "caption": caption,
            "release": release, "bench_held_out": held_out, **counts}

"""Where things live under a data root (local folder; the object store arrives with the platform issue).

```
<data_root>/
  manifests/<stage>/<shard>.parquet        one typed manifest per stage and shard
  manifests/purification_thresholds/<version>.json, latest.json
  thumbs/<image_id>.jpg                     contact-sheet thumbnails
  views/<image_id>.png                      aesthetic-model views (short side 224)
  cache/<stage>/<fingerprint>/<image_id>.json   per-image results, for resuming a killed run
  reports/<stage>/<shard>/...               contact sheets, histograms, tables
  manifests/configs/<fingerprint>.json      what each stage ran with: keys read + whole config (lineage)
  index/ids.sqlite                          image id -> (stage, manifest, row): a cache kept on commit and
                                            checked on read (curation.lineage.index); never synced

Paths inside manifests are relative to the data root when they point inside it (:meth:`DataLayout.rel`,
:meth:`DataLayout.resolve`), so a copied data root reads its own files.
  releases/<name>/manifest.parquet, release.json   a frozen release (DVC-tracked)
  releases/_index/<name>.json               the releases table, one entry per release
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curation.names import fs_path


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "DataLayout":
        return cls(Path(root).resolve())

    def rel(self, path: str | os.PathLike) -> str:
        """How a path is written into a manifest: POSIX, relative to the data root when inside it
        (a copied or moved data root keeps working), absolute otherwise (a raw root elsewhere)."""
        p = Path(path)
        p = p if p.is_absolute() else Path.cwd() / p
        try:
            return p.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(p.resolve())

    def resolve(self, stored: str | os.PathLike | None) -> Path | None:
        """A path read from a manifest -> a path on this worker (relative ones under the data root;
        an escaped name, :mod:`curation.names`, back to its original bytes)."""
        if stored is None or stored == "":
            return None
        p = Path(fs_path(stored) if isinstance(stored, str) else stored)
        return p if p.is_absolute() else self.root / p

    def manifest(self, stage: str, shard: str) -> Path:
        return self.root / "manifests" / stage / f"{shard}.parquet"

    def manifests(self, stage: str) -> list[Path]:
        d = self.root / "manifests" / stage
        return sorted(d.glob("*.parquet")) if d.exists() else []

    def shards_with(self, stage: str) -> list[str]:
        return [p.stem for p in self.manifests(stage)]

    def id_index(self) -> Path:
        """The lineage id index (:mod:`curation.lineage.index`): derived, outside ``manifests/``."""
        return self.root / "index" / "ids.sqlite"

    def thresholds_dir(self) -> Path:
        return self.root / "manifests" / "purification_thresholds"

    def config_snapshot(self, config_hash: str) -> Path:
        return self.root / "manifests" / "configs" / f"{config_hash}.json"

    def release_dir(self, name: str) -> Path:
        return self.root / "releases" / name

    def release_index(self) -> Path:
        return self.root / "releases" / "_index"

    def thumb(self, image_id: str) -> Path:
        return self.root / "thumbs" / f"{image_id}.jpg"

    def view(self, image_id: str) -> Path:
        return self.root / "views" / f"{image_id}.png"

    def cache(self, stage: str, config_hash: str) -> Path:
        return self.root / "cache" / stage / config_hash

    def report_dir(self, stage: str, shard: str = "all") -> Path:
        d = self.root / "reports" / stage / shard
        d.mkdir(parents=True, exist_ok=True)
        return d

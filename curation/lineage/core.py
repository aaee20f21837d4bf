"""Lineage records: links, providers, the registry, and the walk over an image's family."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curation.layout import DataLayout
from curation.registry import Registry

PASSED, REJECTED, INFO = "passed", "rejected", "info"


@dataclass
class Link:
    """One stage's record of one image.

    ``status``: ``passed`` / ``rejected`` for stages that decide, ``info`` for the rest
    (a release containing the image, a checkpoint trained on it). ``record`` says where the
    record lives (a manifest file, a release, an MLflow run), ``details`` holds its fields.
    """

    stage: str
    image_id: str
    status: str
    summary: str
    details: dict = field(default_factory=dict)
    record: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class LinkProvider:
    """One stage's part of the lineage.

    A stage of the stage table takes its table position in the chain; ``order`` places the
    others (releases, checkpoints) after them; ``required`` stages must hold a passed record
    for every image of a release (``uhr audit``); ``required_with_captions`` stages only for a
    release made from the final corpus (release.json's ``required_stages`` says which were).
    ``edges`` reports (parent, child) id pairs the stage created (derived images); ``links``
    the stage's records for a set of ids.
    """

    stage: str = ""
    order: int = 100
    required: bool = False
    required_with_captions: bool = False
    title: str = ""

    def edges(self, ctx: "LineageContext", ids: set[str]) -> list[tuple[str, str]]:
        return []

    def links(self, ctx: "LineageContext", ids: set[str]) -> list[Link]:
        raise NotImplementedError


#: stage name -> provider class (the project's one registry pattern, :class:`curation.registry.Registry`)
_PROVIDERS: Registry[type[LinkProvider]] = Registry("lineage link provider")
_DISCOVERED = False


def register_link_provider(cls: type[LinkProvider]) -> type[LinkProvider]:
    """Class decorator: register a stage's :class:`LinkProvider` under ``cls.stage``."""
    if not cls.stage:
        raise ValueError(f"{cls.__name__} has no stage")
    return _PROVIDERS.register(cls.stage, cls)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import curation.lineage.providers as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _DISCOVERED = True


def _chain_position(p: LinkProvider) -> tuple[int, str]:
    """A stage of the stage table sits at its table position; other links (releases, checkpoints)
    at their ``order`` (after the table's stages unless they say otherwise)."""
    from curation.stages.table import STAGES

    names = STAGES.names()
    return (names.index(p.stage) if p.stage in names else len(names) + p.order, p.stage)


def link_providers() -> list[LinkProvider]:
    """Every registered provider, in chain order."""
    _discover()
    return sorted((cls() for cls in _PROVIDERS.values()), key=_chain_position)


class LineageContext:
    """What providers read: the data root's manifests and releases, the object store (optional)
    and the MLflow tracking URI (optional).

    Rows by ``image_id`` / ``parent_id`` come through the data root's id index
    (:mod:`curation.lineage.index`): a few B-tree probes name the manifests that hold the ids, and
    only those are read (filtered by the ids), whatever the number of shards. ``use_index=False``
    (or no usable index: a read-only data root, ``curation.lineage.index.ENABLED = False``) reads the id column of
    every manifest of the stage to find them instead; both give the same rows in the same order."""

    def __init__(self, layout: DataLayout, store=None, tracking_uri: str | None = None, use_index: bool = True):
        self.layout = layout
        self.store = store
        self.tracking_uri = tracking_uri
        self.use_index = use_index
        self._index = None
        self._refreshed: set[str] = set()
        self._datasets: dict[str, ds.Dataset | None] = {}
        self._cache: dict = {}

    def index(self, stage: str | None = None):
        """The id index with ``stage``'s entries checked against its manifests (once per context),
        or None when lookups scan the manifests."""
        if not self.use_index:
            return None
        if self._index is None:
            from curation.lineage.index import IdIndex

            self._index = IdIndex.open(self.layout)
            if self._index is None:
                self.use_index = False
                return None
        if stage is not None and stage not in self._refreshed:
            self._index.refresh(stage)
            self._refreshed.add(stage)
        return self._index

    def dataset(self, stage: str) -> ds.Dataset | None:
        if stage not in self._datasets:
            from curation.manifest import SCHEMAS

            paths = [str(p) for p in self.layout.manifests(stage)]
            self._datasets[stage] = ds.dataset(paths, format="parquet", schema=SCHEMAS.get(stage)) if paths else None
        return self._datasets[stage]

    def rows(self, stage: str, ids: Iterable[str], column: str = "image_id") -> list[dict]:
        """Rows of every shard manifest of ``stage`` whose ``column`` is one of ``ids``, with the
        manifest's file name under ``_manifest`` (in manifest, then row order)."""
        ids = sorted(set(ids))
        if not ids:
            return []
        from curation.lineage.index import KEY_COLUMNS

        if column in KEY_COLUMNS and self.use_index:
            idx = self.index(stage)
            if idx is not None:
                return self._indexed_rows(idx, stage, ids, column)
        return self._scanned_rows(stage, ids, column)

    def _indexed_rows(self, idx, stage: str, ids: list[str], column: str) -> list[dict]:
        """The index names the manifests that hold an id (each checked against its entry, so a
        changed one is re-indexed first); only those are read, filtered by the ids themselves."""
        files = idx.files_of(stage, ids, column)
        if not idx.check(stage, files):  # a manifest changed since it was indexed: it was re-indexed, ask again
            files = idx.files_of(stage, ids, column)
        return self._read_rows(stage, [str(idx.stage_dir(stage) / name) for name in sorted(files)], ids, column)

    def _scanned_rows(self, stage: str, ids: list[str], column: str) -> list[dict]:
        d = self.dataset(stage)
        if d is None:
            return []
        flt = pc.field(column).isin(pa.array(ids, pa.string()))
        # two passes: the id column of every shard (cheap), then whole rows of the shards that match
        files = sorted(set(d.to_table(filter=flt, columns=["__filename"]).column("__filename").to_pylist()))
        return self._read_rows(stage, files, ids, column)

    def _read_rows(self, stage: str, files: list[str], ids: list[str], column: str) -> list[dict]:
        if not files:
            return []
        from curation.manifest import SCHEMAS

        schema = SCHEMAS.get(stage)
        if schema is None:
            d = self.dataset(stage)
            schema = d.schema if d is not None else ds.dataset(files[0], format="parquet").schema
        want = set(ids)
        out: list[dict] = []
        # batch by batch, a Python set probe per row (an Arrow ``isin`` filter hashes the ids again
        # for every batch: the larger cost when an audit batch asks for 10^4 ids)
        for batch in ds.dataset(files, format="parquet", schema=schema).to_batches(
                columns=schema.names + ["__filename"]):
            mask = [v in want for v in batch.column(column).to_pylist()]
            if any(mask):
                out.extend(batch.filter(pa.array(mask, pa.bool_())).to_pylist())
        for r in out:
            r["_manifest"] = r.pop("__filename")
        return out

    def memo(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def config_snapshot(self, config_hash: str | None) -> dict | None:
        """The config a stage ran with, when the stage stored its snapshot (``manifests/configs``)."""
        if not config_hash:
            return None

        def load():
            p = self.layout.config_snapshot(config_hash)
            return json.loads(p.read_text()) if p.exists() else None

        return self.memo(("config", config_hash), load)


def family(ctx: LineageContext, ids: Iterable[str], providers: list[LinkProvider] | None = None,
           max_rounds: int = 8) -> tuple[set[str], list[tuple[str, str]]]:
    """Every id related to ``ids`` through derived-image edges (both directions), and the edges."""
    providers = providers or link_providers()
    seen = set(ids)
    edges: set[tuple[str, str]] = set()
    frontier = set(seen)
    for _ in range(max_rounds):
        if not frontier:
            break
        new: set[str] = set()
        for p in providers:
            for parent, child in p.edges(ctx, frontier):
                edges.add((parent, child))
                new.update((parent, child))
        frontier = new - seen
        seen |= new
    return seen, sorted(edges)


def lineage_batch(ctx: LineageContext, ids: Iterable[str],
                  providers: list[LinkProvider] | None = None) -> dict[str, list[Link]]:
    """``{image_id: links of its family, in chain order}`` for many images at once."""
    providers = providers or link_providers()
    ids = list(dict.fromkeys(ids))
    fams: dict[str, set[str]] = {}
    _, all_edges = family(ctx, ids, providers)
    adj: dict[str, set[str]] = {}
    for a, b in all_edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    for i in ids:
        comp, stack = {i}, [i]
        while stack:
            for n in adj.get(stack.pop(), ()):
                if n not in comp:
                    comp.add(n)
                    stack.append(n)
        fams[i] = comp
    every = set().union(*fams.values()) if fams else set()
    by_id: dict[str, list[Link]] = {}
    for p in providers:
        for link in p.links(ctx, every):
            by_id.setdefault(link.image_id, []).append(link)
    out = {}
    order = {p.stage: n for n, p in enumerate(providers)}
    for i in ids:
        links = [lk for m in fams[i] for lk in by_id.get(m, [])]
        out[i] = sorted(links, key=lambda lk: (order.get(lk.stage, 999), lk.image_id != i, lk.image_id))
    return out


@dataclass
class Lineage:
    image_id: str
    family: list[str]
    edges: list[tuple[str, str]]
    links: list[Link]

    def by_stage(self) -> dict[str, list[Link]]:
        out: dict[str, list[Link]] = {}
        for lk in self.links:
            out.setdefault(lk.stage, []).append(lk)
        return out

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "family": self.family,
                "edges": [{"parent": a, "child": b} for a, b in self.edges],
                "links": [lk.as_dict() for lk in self.links]}


def lineage(ctx: LineageContext, image_id: str) -> Lineage:
    providers = link_providers()
    fam, edges = family(ctx, [image_id], providers)
    links = lineage_batch(ctx, [image_id], providers)[image_id]
    return Lineage(image_id, sorted(fam), edges, links)


#: an image id or a prefix of one: hex digits (ids are the first 20 hex digits of a sha256)
IMAGE_ID_RE = re.compile(r"[0-9a-f]{6,64}")


def check_image_id(value: object) -> str:
    """``value`` stripped and lower-cased when it is an image id or a prefix of one (6 to 64 hex
    digits), else ValueError naming the rule."""
    v = value.strip().lower() if isinstance(value, str) else ""
    if len(v) < 6:
        raise ValueError(f"bad image id {value!r}: give at least 6 characters of the image id")
    if not IMAGE_ID_RE.fullmatch(v):
        raise ValueError(f"bad image id {value!r}: an image id is 6 to 64 hex digits (0-9, a-f)")
    return v


def resolve_image_id(ctx: LineageContext, prefix: str) -> str:
    """A full image id from an id or a unique prefix of one (raw pool and corpus ids): 6 to 64
    hex digits (surrounding blanks and case ignored); anything else (a path, ``..``) is a
    ValueError naming the rule before any manifest is read."""
    prefix = check_image_id(prefix)
    found: set[str] = set()
    stages = ("raw_pool", "corpus_100mp")
    idx = ctx.index()
    if idx is not None:
        for stage in stages:
            ctx.index(stage)
        found = idx.prefix(stages, prefix)
    for stage in stages if idx is None else ():
        d = ctx.dataset(stage)
        if d is None:
            continue
        col = d.to_table(columns=["image_id"]).column("image_id")
        mask = pc.starts_with(col, prefix)
        found.update(pc.filter(col, mask).to_pylist())
    if not found:
        raise KeyError(f"no image id starting with {prefix!r} in {ctx.layout.root}/manifests")
    if len(found) > 1:
        raise KeyError(f"{prefix!r} is ambiguous: {', '.join(sorted(found)[:5])}")
    return found.pop()

"""The stage table: one declaration per stage of the corpus pipeline.

Everything that needs to know the stages reads this table: the Dagster assets and jobs
(``orchestration/definitions.py``), the DVC stages (``uhr dvc-yaml``), the object-store sync
(``curation.store.sync``), ``uhr materialize --asset``, lineage order and the demo. A stage's
fingerprint (:mod:`curation.stages.fingerprint`) is computed from its ``reads`` (config sections),
its ``code_version`` and its upstream stages' fingerprints.

Adding a stage = one :func:`register_stage` call (or an entry in :data:`STAGES` below) + its
library function + its asset body (``assets/``, decorated with ``@stage_asset(name)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Callable, Iterator, Literal


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline.

    * ``name``: the stage, its Dagster asset key and its manifest folder (``manifests/<name>/``);
    * ``code_version``: bump when the stage's logic changes (part of the fingerprint);
    * ``upstream``: stages whose outputs it reads (Dagster deps, DVC deps, fingerprint inputs);
    * ``inputs``: the upstream stages whose *same-shard* manifests the stage reads (store sync
      fetches them before the stage runs); a subset of ``upstream``;
    * ``reads``: dotted config keys/sections the stage's outputs depend on (nothing else of the
      config changes its fingerprint);
    * ``blobs``: ``(path column, sha256 column)`` of the passed rows whose files are kept as
      content-addressed blobs, or ``None``;
    * ``partitioned``: one partition per shard (``True``) or one global output (a reduce);
    * ``pool``: ``"cpu"`` or ``"gpu"`` (Dagster concurrency pool of the asset);
    * ``job`` / ``group``: the Dagster job that materialises it and the UI group;
    * ``run_tags``: ``(key, value)`` tags on every run of its job, for the run queue: the instance's
      ``concurrency: runs: tag_concurrency_limits`` (``infra/dagster/*.yaml``,
      ``infra/k8s/values.yaml``) cap how many runs carrying a tag run at once --
      ``uhrforge/ingest: raw_pool`` one (dedup is first seen wins: shards ingest one at a time, in
      key order), ``uhrforge/pool: scores`` a few (shards score side by side; each run holds up to
      ``runtime.memory_budget_mb``, so the limit times that must fit the node);
    * ``function``: ``"module:function"`` of its library entry point (no Dagster import there);
    * ``reads_raw``: the stage reads the raw shard folders (DVC dep on the raw root);
    * ``prompts``: the prompt files (``prompts/<name>.md``) of the model calls it makes: their
      content is part of the fingerprint, so a prompt change redoes the stage (the VLM answer
      cache still serves every call whose prompt did not change) and what follows.
    """

    name: str
    code_version: str
    function: str
    upstream: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    blobs: tuple[str, str] | None = None
    partitioned: bool = True
    pool: Literal["cpu", "gpu"] = "cpu"
    job: str = ""
    group: str = "curation"
    reads_raw: bool = False
    run_tags: tuple[tuple[str, str], ...] = ()
    prompts: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not set(self.inputs) <= set(self.upstream):
            raise ValueError(f"stage {self.name}: inputs {self.inputs} must be among upstream {self.upstream}")
        if self.pool not in ("cpu", "gpu"):
            raise ValueError(f"stage {self.name}: pool must be 'cpu' or 'gpu', not {self.pool!r}")
        if not self.job:
            object.__setattr__(self, "job", f"{self.name}_job")

    def load_function(self) -> Callable:
        """The library function named by ``function``."""
        module, _, attr = self.function.partition(":")
        return getattr(import_module(module), attr)


class StageTable:
    """The ordered stages (upstream before downstream); ``register`` keeps that order valid."""

    def __init__(self) -> None:
        self._specs: dict[str, StageSpec] = {}

    def register(self, spec: StageSpec) -> StageSpec:
        if spec.name in self._specs:
            if self._specs[spec.name] == spec:
                return spec
            raise ValueError(f"stage {spec.name!r} is already in the stage table")
        missing = [u for u in spec.upstream if u not in self._specs]
        if missing:
            raise ValueError(f"stage {spec.name!r}: upstream {missing} not in the stage table (register them first)")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a stage nothing depends on (tests add throw-away stages)."""
        users = [s.name for s in self._specs.values() if name in s.upstream]
        if users:
            raise ValueError(f"stage {name!r} is upstream of {users}")
        self._specs.pop(name, None)

    def __getitem__(self, name: str) -> StageSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown stage {name!r}: choose from {', '.join(self._specs)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def downstream(self, name: str) -> list[str]:
        """``name`` and every stage that depends on it, transitively, in table order."""
        out = {name}
        for s in self:
            if out & set(s.upstream):
                out.add(s.name)
        return [s for s in self.names() if s in out]

    def jobs(self) -> dict[str, list[str]]:
        """``{job name: [stages]}`` in table order."""
        out: dict[str, list[str]] = {}
        for s in self:
            out.setdefault(s.job, []).append(s.name)
        return out


STAGES = StageTable()


def register_stage(spec: StageSpec) -> StageSpec:
    return STAGES.register(spec)


def stage(name: str) -> StageSpec:
    return STAGES[name]


# -- the corpus pipeline (paper section 3.1) ---------------------------------------------------

register_stage(StageSpec(
    name="raw_pool", code_version="raw_pool-2",
    function="curation.stages.purification:run_raw_pool",
    reads=("sizes.linear_scale", "resolution_screen", "io.max_pixels"),
    blobs=("source_path", "sha256"), job="shard_ingest", reads_raw=True,
    run_tags=(("uhrforge/ingest", "raw_pool"),),
    description="Every entry of a raw shard folder (one row each; not a regular file -> rejected unopened): content-hash id, licence, dedup (first seen wins), resolution screen.",
))
register_stage(StageSpec(
    name="image_scores", code_version="image_scores-1",
    function="curation.stages.purification:run_image_scores",
    upstream=("raw_pool",), inputs=("raw_pool",),
    reads=("purification.exposure", "purification.sharpness", "purification.flatness",
           "purification.richness.histogram_bins", "purification.aesthetics.scorers",
           "purification.aesthetics.laion", "judges.artimuse",
           "io.max_pixels", "report.thumb_px"),
    prompts=("artimuse_aesthetics",), job="shard_scores", run_tags=(("uhrforge/pool", "scores"),),
    description="Per-image purification scores (exposure, Laplacian, flatness, entropy, aesthetics), one decode each.",
))
register_stage(StageSpec(
    name="purification_thresholds", code_version="thresholds-1",
    function="curation.stages.purification:run_thresholds",
    upstream=("image_scores",),
    reads=("purification.richness.keep_top_fraction", "purification.aesthetics.keep_top_fraction"),
    partitioned=False, job="purification_thresholds_job",
    description="Global relative-cut thresholds over all shards: entropy top 60 %, LAION / ArtiMuse top 60 %.",
))
register_stage(StageSpec(
    name="candidate_pool", code_version="candidate_pool-1",
    function="curation.stages.purification:run_candidate_pool",
    upstream=("image_scores", "purification_thresholds"), inputs=("image_scores",),
    job="candidate_selection",
    description="Candidates: pass exposure AND sharpness AND flatness AND entropy top 60 % AND (S_L or S_A top 60 %).",
))
register_stage(StageSpec(
    name="corpus_100mp", code_version="corpus_100mp-1",
    function="curation.corpus:run_corpus",
    upstream=("candidate_pool", "raw_pool"), inputs=("candidate_pool", "raw_pool"),
    reads=("sizes.linear_scale", "resolution_screen", "corpus", "judges.corpus"),
    blobs=("output_path", "sha256"), pool="gpu", job="corpus_100mp_job", group="corpus",
    prompts=("region_artifact",),
    description="Every candidate brought to >= 100 MP (archive / 2x / 4x tiled SR) and checked: seams, "
                "post-SR consistency, region-level VLM artifacts, instance hook.",
))

register_stage(StageSpec(
    name="captions", code_version="captions-1",
    function="curation.captioning.stage:run_captions",
    upstream=("corpus_100mp",), inputs=("corpus_100mp",),
    reads=("captions", "judges.captions", "judges.captions_llm", "judges.corpus",
           "corpus.final_filters.instances.max_flagged"),
    pool="gpu", job="captions_job", group="captions",
    prompts=("caption_tag_pruning", "caption_instance_description", "instance_artifact",
             "caption_aesthetics_analysis", "caption_long", "caption_short"),
    description="Stage-wise, instance-grounded captions (tags, boxes, masks, instance descriptions, aesthetics "
                "analysis, long and short caption) and the instance-level artifact check (3.1.4).",
))
register_stage(StageSpec(
    name="final_corpus", code_version="final_corpus-1",
    function="curation.stages.final:run_final_corpus",
    upstream=("corpus_100mp", "captions"), inputs=("corpus_100mp", "captions"),
    job="final_corpus_job", group="captions",
    description="The final corpus: corpus passed AND instance check passed AND captions complete.",
))
register_stage(StageSpec(
    name="bench_split", code_version="bench_split-1",
    function="curation.stages.final:run_bench_split",
    upstream=("final_corpus",), reads=("bench_split",), partitioned=False, job="bench_split_job",
    group="captions",
    description="PixVerve-Bench images held out of the final corpus by a seeded rule (benchmark.jsonl + reference/).",
))


def stage_table_markdown(table: StageTable = STAGES) -> str:
    """The stage table as Markdown (the README's copy is checked against this by a test)."""
    lines = ["| stage | code version | upstream | config keys read | blobs | partitions | pool | job | run tags "
             "| library function |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in table:
        lines.append("| " + " | ".join([
            f"`{s.name}`", s.code_version, ", ".join((["raw shards"] if s.reads_raw else []) + list(s.upstream)),
            ", ".join(f"`{k}`" for k in s.reads) or "-", f"`{s.blobs[0]}`" if s.blobs else "-",
            "shard" if s.partitioned else "global", s.pool, f"`{s.job}`",
            ", ".join(f"`{k}: {v}`" for k, v in s.run_tags) or "-", f"`{s.function}`",
        ]) + " |")
    return "\n".join(lines)

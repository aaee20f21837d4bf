"""The stage table drives everything; per-stage fingerprints recompute exactly what a change touches.

* a throw-away stage added to the table shows up in the Definitions (asset, job, fingerprint as
  code version), in ``dvc.yaml`` and in ``uhr materialize --asset``, and runs;
* on the test profile's whole pipeline (corpus and captions included): changing a bench judge key
  recomputes zero images in every stage; a ``captions.*`` key recomputes the captions and what
  follows, not one corpus image; a ``corpus.*`` key recomputes the corpus and what follows and
  nothing upstream (counted from the materialisations, and the
  Dagster code versions change for exactly that stage);
* a copied data root works after the original is deleted; two fresh runs on one pool agree on
  the threshold version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, MaterializeResult

from curation.config import load_config
from curation.layout import DataLayout
from curation.stages.fingerprint import fingerprints
from curation.stages.table import STAGES, StageSpec
from orchestration.definitions import build_definitions
from orchestration.pipeline import materialize_all
from orchestration.resources import AestheticModels, CurationSettings

ROOT = Path(__file__).resolve().parents[1]


def _defs(data, raw, config_dir=None):
    return build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test",
                                     config_dir=str(config_dir) if config_dir else None),
        "aesthetics": AestheticModels(),
    })


def _counts(out) -> dict[str, tuple[int, int, int]]:
    return {s["stage"]: (s["partitions"], s["computed"], s["reused"]) for s in out["stages"]}


def _config_copy(tmp: Path, edit) -> Path:
    """configs/ copied to ``tmp`` with ``edit(paper_dict)`` applied to paper.yaml."""
    d = tmp / "configs"
    shutil.copytree(ROOT / "configs", d)
    paper = yaml.safe_load((d / "paper.yaml").read_text())
    edit(paper)
    (d / "paper.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    return d


@pytest.fixture(scope="module")
def pipeline(materialised, tmp_path_factory):
    """A private copy of the session's materialised test profile (raw pool inside the data root, so
    the whole thing can be copied); ``first`` is the counts of that first materialisation."""
    from orchestration.runs import instance_for

    base = tmp_path_factory.mktemp("fp")
    data = materialised.copy(base / "data")
    instance = instance_for(data)
    yield {"base": base, "data": data, "raw": data / "raw", "instance": instance, "first": materialised.out,
           "cfg": load_config("test")}
    instance.dispose()


def test_first_run_computes_everything_and_a_rerun_nothing(pipeline):
    first = _counts(pipeline["first"])
    assert list(first) == list(STAGES.names())
    n_shards = len(pipeline["first"]["shards"])
    assert n_shards >= 2
    for stage, (parts, computed, reused) in first.items():
        assert parts == (n_shards if STAGES[stage].partitioned else 1), stage
        assert computed > 0 and reused == 0, (stage, computed, reused)
    again = _counts(materialize_all(_defs(pipeline["data"], pipeline["raw"]), pipeline["instance"], pipeline["raw"],
                                    log=lambda *_: None))
    for stage, (parts, computed, reused) in again.items():
        assert computed == 0 and reused == first[stage][1], (stage, again[stage], first[stage])


def test_bench_judge_change_recomputes_nothing(pipeline, tmp_path):
    def edit(paper):
        paper["judges"]["bench"]["model"] = "another-judge"
        paper["paper_table1"]["final"] += 1  # a number no stage reads (the demo's comparison table); a new
        # top-level section would be refused by the config schema (curation/config_schema.py: no unknown key)

    cdir = _config_copy(tmp_path, edit)
    cfg = load_config("test", cdir)
    assert cfg.hash != pipeline["cfg"].hash  # the whole config did change ...
    assert fingerprints(cfg) == fingerprints(pipeline["cfg"])  # ... no stage reads what changed
    out = _counts(materialize_all(_defs(pipeline["data"], pipeline["raw"], cdir), pipeline["instance"],
                                  pipeline["raw"], log=lambda *_: None))
    assert all(computed == 0 for _, computed, _ in out.values()), out
    assert out["corpus_100mp"][2] > 0


def test_captions_change_recomputes_captions_and_nothing_upstream(pipeline, tmp_path):
    def edit(paper):
        paper["captions"]["long_caption"]["max_words"] = 500

    cdir = _config_copy(tmp_path, edit)
    before, after = fingerprints(pipeline["cfg"]), fingerprints(load_config("test", cdir))
    changed = {s for s in before if before[s] != after[s]}
    assert changed == set(STAGES.downstream("captions")) == {"captions", "final_corpus", "bench_split"}
    out = _counts(materialize_all(_defs(pipeline["data"], pipeline["raw"], cdir), pipeline["instance"],
                                  pipeline["raw"], log=lambda *_: None))
    for stage in STAGES.names():
        if stage in changed:
            assert out[stage][1] > 0, (stage, out[stage])
        else:  # the corpus above all: not one upscale redone
            assert out[stage][1] == 0, (stage, out[stage])


def test_corpus_change_recomputes_corpus_and_nothing_upstream(pipeline, tmp_path):
    def edit(paper):
        paper["corpus"]["final_filters"]["seam"]["r_t"] = 2.6

    cdir = _config_copy(tmp_path, edit)
    before, after = fingerprints(pipeline["cfg"]), fingerprints(load_config("test", cdir))
    changed = {s for s in before if before[s] != after[s]}
    assert changed == set(STAGES.downstream("corpus_100mp")) == {"corpus_100mp", "captions", "final_corpus",
                                                                  "bench_split"}
    defs = _defs(pipeline["data"], pipeline["raw"], cdir)
    graph = defs.resolve_asset_graph()  # the UI marks exactly the corpus partitions stale
    for stage in STAGES.names():
        assert graph.get(AssetKey(stage)).code_version == after[stage]
    out = _counts(materialize_all(defs, pipeline["instance"], pipeline["raw"], log=lambda *_: None))
    first = _counts(pipeline["first"])
    for stage in ("raw_pool", "image_scores", "purification_thresholds", "candidate_pool"):
        assert out[stage][1] == 0, (stage, out[stage])
    for stage in ("captions", "final_corpus"):  # downstream of the corpus: recomputed
        assert out[stage][1] > 0, (stage, out[stage])
    assert out["corpus_100mp"][1] == first["corpus_100mp"][1] > 0
    layout = DataLayout.at(pipeline["data"])
    for p in layout.manifests("corpus_100mp"):
        assert set(pq.read_table(p).column("config_hash").to_pylist()) == {after["corpus_100mp"]}
    for p in layout.manifests("raw_pool"):
        assert set(pq.read_table(p).column("config_hash").to_pylist()) == {before["raw_pool"]}
    snap = json.loads(layout.config_snapshot(after["corpus_100mp"]).read_text())
    assert snap["stage"] == "corpus_100mp" and snap["reads"]["corpus"]["final_filters"]["seam"]["r_t"] == 2.6


def test_threshold_version_is_reproducible_across_fresh_runs(pipeline, tmp_path):
    other = tmp_path / "other"
    materialize_all(_defs(other, pipeline["raw"]), DagsterInstance.ephemeral(), pipeline["raw"],
                    log=lambda *_: None, assets=["raw_pool", "image_scores", "purification_thresholds"])
    a = json.loads((DataLayout.at(pipeline["data"]).thresholds_dir() / "latest.json").read_text())
    b = json.loads((DataLayout.at(other).thresholds_dir() / "latest.json").read_text())
    assert a["version"] == b["version"] and a["entropy"] == b["entropy"]


def test_copied_data_root_works_after_the_original_is_deleted(pipeline, tmp_path):
    src = pipeline["data"]
    # bring the original up to date with the default config first (earlier tests ran other configs)
    materialize_all(_defs(src, pipeline["raw"]), pipeline["instance"], pipeline["raw"], log=lambda *_: None)
    copy = tmp_path / "moved"
    shutil.copytree(src, copy, symlinks=True)
    keep = tmp_path / "keep"
    shutil.move(str(src), keep)  # the original is gone (moved back at the end for the other tests)
    try:
        layout = DataLayout.at(copy)
        n_paths = 0
        for stage, cols in (("raw_pool", ("source_path",)), ("image_scores", ("source_path", "thumb_path")),
                            ("corpus_100mp", ("source_path", "output_path"))):
            for p in layout.manifests(stage):
                for r in pq.read_table(p).to_pylist():
                    for c in cols:
                        if r.get(c) and r["passed"]:
                            assert not Path(r[c]).is_absolute(), (stage, c, r[c])
                            assert layout.resolve(r[c]).is_file(), (stage, c, r[c])
                            n_paths += 1
        assert n_paths > 0
        out = _counts(materialize_all(_defs(copy, copy / "raw"), DagsterInstance.ephemeral(), copy / "raw",
                                      log=lambda *_: None))
        assert all(computed == 0 for _, computed, _ in out.values()), out.items()
        from curation.lineage import image_lineage, lineage_text
        from curation.lineage.core import LineageContext

        corpus = [r for p in layout.manifests("corpus_100mp") for r in pq.read_table(p).to_pylist() if r["passed"]]
        assert corpus
        full, lin = image_lineage(LineageContext(layout), corpus[0]["image_id"])
        text = lineage_text(lin, full)
        assert str(src) not in text and corpus[0]["parent_id"] in text and "MISSING" not in text
    finally:
        shutil.move(str(keep), src)


# -- a throw-away stage -------------------------------------------------------------------------

def count_passed(layout, shard):
    from curation.manifest import read_manifest

    return sum(read_manifest(layout.manifest("raw_pool", shard)).column("passed").to_pylist())


@pytest.fixture()
def toy_stage():
    from assets._stage import STAGE_ASSETS, stage_asset, stage_metadata

    spec = StageSpec(name="toy_stage", code_version="toy-1", function=f"{__name__}:count_passed",
                     upstream=("raw_pool",), inputs=("raw_pool",), reads=("sizes.shard_size",),
                     description="A throw-away stage added by a test.")
    STAGES.register(spec)

    @stage_asset("toy_stage", kinds={"python"})
    def toy(context, settings: CurationSettings) -> MaterializeResult:
        n = spec.load_function()(settings.layout(), context.partition_key)
        return MaterializeResult(metadata=stage_metadata(settings.config(), "toy_stage", {"computed": n}))

    try:
        yield spec
    finally:
        STAGES.unregister("toy_stage")
        STAGE_ASSETS.pop("toy_stage", None)


def test_a_new_stage_is_one_table_entry_plus_its_function_and_body(toy_stage, tmp_path):
    from curation.synth import make_raw_pool
    from orchestration.dvc_stages import dvc_stages

    cfg = load_config("test")
    data, raw = tmp_path / "data", tmp_path / "raw"
    make_raw_pool(raw, 20, 1, cfg)
    defs = _defs(data, raw)
    node = defs.resolve_asset_graph().get(AssetKey("toy_stage"))
    assert node.code_version == fingerprints(cfg)["toy_stage"]
    assert {k.to_user_string() for k in node.parent_keys} == {"raw_pool"}
    assert defs.resolve_job_def("toy_stage_job") is not None
    dvc = dvc_stages("data/t", "data/t/raw", "test")["stages"]["toy_stage"]
    assert dvc["cmd"].endswith("--asset toy_stage") and "data/t/manifests/raw_pool" in dvc["deps"]
    instance = DagsterInstance.ephemeral()
    out = _counts(materialize_all(defs, instance, raw, log=lambda *_: None, assets=["raw_pool", "toy_stage"]))
    passed = sum(count_passed(DataLayout.at(data), s) for s in DataLayout.at(data).shards_with("raw_pool"))
    assert out["toy_stage"][1] == passed > 0

    from cli.main import cli

    res = CliRunner().invoke(cli, ["materialize", "--data-root", str(data), "--raw-root", str(raw),
                                   "--profile", "test", "--asset", "toy_stage", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    shards = DataLayout.at(data).shards_with("raw_pool")
    assert doc["stages"] == [{"stage": "toy_stage", "partitions": len(shards), "computed": passed, "reused": 0}]


def test_readme_shows_the_stage_table():
    from curation.stages.table import stage_table_markdown

    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- stage-table:begin -->\n", 1)[1].split("\n<!-- stage-table:end -->", 1)[0]
    assert block == stage_table_markdown()

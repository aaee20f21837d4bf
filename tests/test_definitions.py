"""The code location loads: assets, checks, jobs, resources, and asset selection strings."""

from dagster import AssetKey, AssetSelection

from orchestration.definitions import defs


def test_definitions_load_with_every_asset_and_check():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_pool", "image_scores", "purification_thresholds", "candidate_pool", "corpus_100mp",
                    "captions", "final_corpus", "bench_split", "bench_scores", "corpus_release",
                    "training_set", "checkpoint", "checkpoint_bench"}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for asset in ("raw_pool", "image_scores", "candidate_pool", "captions", "final_corpus"):
        assert (asset, "rows_conserved") in checks and (asset, "manifest_schema") in checks
    for job in ("shard_ingest", "shard_scores", "candidate_selection", "purification_thresholds_job", "corpus_100mp_job",
                "bench_scores_job", "release_job", "training_set_job", "checkpoint_job"):
        assert defs.resolve_job_def(job) is not None
    # every asset declares a code version
    for key in graph.get_all_asset_keys():
        assert graph.get(key).code_version, key


def test_ingest_and_scores_are_separate_jobs_with_their_run_queue_tags():
    """raw_pool runs alone in the ingest job (serial: ``uhrforge/ingest``), image_scores alone in the
    scores job (a few shards at once: ``uhrforge/pool``); the new-shard sensor launches the first,
    the scores sensor the second."""
    from curation.stages.table import STAGES
    from orchestration.automation import INGEST_JOB, INGEST_TAG, SCORES_JOB, SCORES_TAG

    assert STAGES.jobs()[INGEST_JOB] == ["raw_pool"] and STAGES.jobs()[SCORES_JOB] == ["image_scores"]
    assert dict(STAGES["raw_pool"].run_tags) == INGEST_TAG and dict(STAGES["image_scores"].run_tags) == SCORES_TAG
    ingest, scores = defs.resolve_job_def(INGEST_JOB), defs.resolve_job_def(SCORES_JOB)
    assert {k.to_user_string() for k in ingest.asset_layer.selected_asset_keys} == {"raw_pool"}
    assert {k.to_user_string() for k in scores.asset_layer.selected_asset_keys} == {"image_scores"}
    assert ingest.partitions_def.name == scores.partitions_def.name == "shards"
    assert ingest.run_tags["uhrforge/ingest"] == "raw_pool" and "uhrforge/pool" not in ingest.run_tags
    assert scores.run_tags["uhrforge/pool"] == "scores" and "uhrforge/ingest" not in scores.run_tags
    for job in (ingest, scores):
        assert job.run_tags["dagster/max_retries"]
    # no other job carries a run queue tag (they run as the queue's max_concurrent_runs allows)
    for job in defs.resolve_all_job_defs():
        if job.name not in (INGEST_JOB, SCORES_JOB):
            assert not {"uhrforge/ingest", "uhrforge/pool"} & set(job.run_tags), job.name
    assert defs.resolve_sensor_def("new_shard_sensor").job_name == INGEST_JOB
    assert defs.resolve_sensor_def("scores_after_ingest_sensor").job_name == SCORES_JOB
    assert "shard_purification" not in {j.name for j in defs.resolve_all_job_defs()}


def test_asset_selection_strings_resolve():
    # needs antlr 4.13 (hydra-core==1.4.0rc3 pin): antlr 4.9 breaks selection strings
    graph = defs.resolve_asset_graph()
    one = AssetSelection.from_string("key:raw_pool+1").resolve(graph)
    # corpus_100mp reads raw_pool's manifest (source hashes) as well as candidate_pool's: a direct dep
    assert one == {AssetKey("raw_pool"), AssetKey("image_scores"), AssetKey("corpus_100mp")}
    down = AssetSelection.from_string("key:raw_pool+").resolve(graph)
    assert AssetKey("candidate_pool") in down and AssetKey("corpus_100mp") in down
    up = AssetSelection.from_string("1+key:candidate_pool").resolve(graph)
    assert AssetKey("purification_thresholds") in up and AssetKey("raw_pool") not in up


def test_rows_conserved_check_is_blocking():
    specs = {}
    for a in defs.assets:
        for spec in getattr(a, "check_specs", []) or []:
            specs[(spec.asset_key.to_user_string(), spec.name)] = spec
    assert specs[("candidate_pool", "rows_conserved")].blocking
    assert specs[("image_scores", "rows_conserved")].blocking
    assert specs[("corpus_100mp", "passed_at_least_100mp")].blocking


def test_training_assets_partitions_and_mapping():
    """checkpoint partitions are the Table A1 ladder stages; each reads its own tier's training set."""
    from assets.training import checkpoint_partitions, tier_to_checkpoints

    keys = checkpoint_partitions.get_partition_keys()
    assert keys == ["I-Full_4K", "I-Full_8K", "I-LoRA_4K", "I-LoRA_8K", "I-LoRA_10K", "II_4K", "III_4K", "III_8K",
                    "III_10K"]
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("checkpoint")).parent_keys == {AssetKey("training_set")}
    assert AssetKey("checkpoint") in graph.get(AssetKey("checkpoint_bench")).parent_keys
    from dagster import StaticPartitionsDefinition

    up = StaticPartitionsDefinition(["4K", "8K", "10K"])
    got = tier_to_checkpoints.get_upstream_mapped_partitions_result_for_partitions(
        checkpoint_partitions.subset_with_partition_keys(["III_8K"]), checkpoint_partitions, up)
    assert set(got.partitions_subset.get_partition_keys()) == {"8K"}

"""Automation: the new-shard sensor (folder and store), the scores-after-ingest sensor, the nightly
stale-only conditions, the weekly bench."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import warnings

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    asset,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from orchestration.automation import (
    BENCH_JOB,
    GPU_POOL,
    INGEST_JOB,
    SCORES_JOB,
    apply_automation,
    automation_conditions,
    new_shard_requests,
    new_shard_sensor,
    nightly_if_stale,
    weekly_bench_schedule,
)
from orchestration.resources import CurationSettings, ObjectStoreResource


def _drop_shard(root, name: str, n: int = 2, age_s: float = 600.0):
    d = root / name
    d.mkdir(parents=True)
    for i in range(n):
        f = d / f"img-{i}.jpg"
        f.write_bytes(os.urandom(64))
        t = time.time() - age_s
        os.utime(f, (t, t))
    (d / "img-0.json").write_text('{"licence": "cc0"}')
    return d


def _apply(instance, result: SensorResult) -> None:
    """What the daemon does with a SensorResult: register the partitions it asks for."""
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


@pytest.fixture()
def env(tmp_path):
    instance = DagsterInstance.ephemeral()
    settings = CurationSettings(data_root=str(tmp_path / "data"), raw_root=str(tmp_path / "raw"), profile="test")
    (tmp_path / "raw").mkdir()
    yield instance, settings, tmp_path
    instance.dispose()


def test_sensor_registers_a_new_shard_and_requests_its_run(env, monkeypatch):
    instance, settings, tmp = env
    monkeypatch.setenv("UHR_SHARD_SETTLE_S", "0")
    resources = {"settings": settings, "store": ObjectStoreResource()}
    ctx = build_sensor_context(instance=instance, cursor=None, resources=resources)
    assert isinstance(new_shard_sensor(ctx), SkipReason)  # empty raw root

    _drop_shard(tmp / "raw", "shard-00000")
    res = new_shard_sensor(build_sensor_context(instance=instance, cursor=None, resources=resources))
    assert isinstance(res, SensorResult)
    (add,) = res.dynamic_partitions_requests
    assert add.partitions_def_name == "shards" and list(add.partition_keys) == ["shard-00000"]
    (req,) = res.run_requests
    assert isinstance(req, RunRequest) and req.partition_key == "shard-00000" and req.job_name == INGEST_JOB
    assert req.tags["dagster/max_retries"] and req.tags["uhrforge/ingest"] == "raw_pool"
    assert "uhrforge/pool" not in req.tags  # the scores run follows the ingest run's success
    assert json.loads(res.cursor)["seen"] == ["shard-00000"]
    _apply(instance, res)
    cursor = res.cursor

    # same tick again: nothing new
    again = new_shard_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    assert isinstance(again, SkipReason)

    # another shard is dropped: only it is registered and requested
    _drop_shard(tmp / "raw", "shard-00001")
    res2 = new_shard_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    assert [r.partition_key for r in res2.run_requests] == ["shard-00001"]
    assert list(res2.dynamic_partitions_requests[0].partition_keys) == ["shard-00001"]
    assert json.loads(res2.cursor)["seen"] == ["shard-00000", "shard-00001"]
    _apply(instance, res2)
    assert instance.get_dynamic_partitions("shards") == ["shard-00000", "shard-00001"]


def test_sensor_waits_for_a_shard_still_being_written_and_skips_known_partitions(env):
    instance, settings, tmp = env
    _drop_shard(tmp / "raw", "shard-00005", age_s=0)
    ctx = build_sensor_context(instance=instance, cursor=None)
    res = new_shard_requests(ctx, settings, ObjectStoreResource(), settle_s=120)
    assert isinstance(res, SkipReason) and "still being written" in res.skip_message
    # a shard registered by someone else (uhr run, a backfill) is recorded, not re-run
    instance.add_dynamic_partitions("shards", ["shard-00005"])
    res = new_shard_requests(ctx, settings, ObjectStoreResource(), settle_s=0)
    assert res.run_requests == [] and res.dynamic_partitions_requests == []
    assert json.loads(res.cursor)["seen"] == ["shard-00005"]


def test_sensor_watches_the_store_raw_prefix(env, monkeypatch):
    from curation.store import LocalStore, upload_shard

    instance, settings, tmp = env
    monkeypatch.setenv("UHR_SHARD_SETTLE_S", "0")
    store_root = tmp / "bucket"
    store = ObjectStoreResource(local_root=str(store_root), raw_prefix="raw")
    resources = {"settings": settings, "store": store}
    assert isinstance(new_shard_sensor(build_sensor_context(instance=instance, resources=resources)), SkipReason)
    upload_shard(LocalStore(store_root), _drop_shard(tmp / "elsewhere", "shard-00042"))
    res = new_shard_sensor(build_sensor_context(instance=instance, resources=resources))
    assert [r.partition_key for r in res.run_requests] == ["shard-00042"]
    # the local raw root is not watched when the store is the raw source
    _drop_shard(tmp / "raw", "shard-00099")
    res2 = new_shard_sensor(build_sensor_context(instance=instance, cursor=res.cursor, resources=resources))
    assert isinstance(res2, SkipReason)


# -- scores after ingest ----------------------------------------------------------------------

@pytest.fixture()
def scores_sensor(tmp_path):
    """The sensor as the code location holds it, ticked the way the daemon ticks it
    (``evaluate_tick``: run requests resolved against the code location's jobs), on a sqlite
    instance (a laptop's) where stand-in runs of ``shard_ingest`` / ``shard_scores`` (one no-op
    step) succeed or fail."""
    from dagster import Failure, job, op
    from dagster._core.definitions.partitions.context import partition_loading_context

    from orchestration.definitions import defs

    sensor = defs.resolve_sensor_def("scores_after_ingest_sensor")
    repo = defs.get_repository_def()
    instance = DagsterInstance.local_temp(str(tmp_path))
    instance.add_dynamic_partitions("shards", ["shard-00000", "shard-00001"])

    @op(config_schema={"fail": bool})
    def step(context):
        if context.op_config["fail"]:
            raise Failure("ingest failed")

    def fake(name):
        @job(name=name)
        def _j():
            step()
        return _j

    jobs = {n: fake(n) for n in (INGEST_JOB, SCORES_JOB)}
    state = {"cursor": None}

    def run(job_name: str, shard: str, fail: bool = False, **tags):
        return jobs[job_name].execute_in_process(
            instance=instance, raise_on_error=False, run_config={"ops": {"step": {"config": {"fail": fail}}}},
            tags={"dagster/partition": shard, **tags}).dagster_run

    def tick():
        ctx = build_sensor_context(instance=instance, cursor=state["cursor"], repository_def=repo)
        with partition_loading_context(dynamic_partitions_store=instance):
            data = sensor.evaluate_tick(ctx)
        state["cursor"] = data.cursor
        return data.run_requests

    run(INGEST_JOB, "shard-00001")  # before the sensor's first tick: history is not replayed
    assert tick() == [] and state["cursor"]
    yield {"sensor": sensor, "run": run, "tick": tick}
    instance.dispose()


def test_ingest_success_requests_the_scores_run_for_its_shard(scores_sensor):
    from orchestration.automation import SCORES_TAG, scores_run_key

    run, tick = scores_sensor["run"], scores_sensor["tick"]
    assert scores_sensor["sensor"].job_name == SCORES_JOB
    ingest = run(INGEST_JOB, "shard-00000")
    (req,) = tick()
    assert req.job_name == SCORES_JOB and req.partition_key == "shard-00000"
    assert req.run_key == scores_run_key(ingest.run_id) == f"scores-after-ingest:{ingest.run_id}"
    assert req.tags["uhrforge/pool"] == SCORES_TAG["uhrforge/pool"] == "scores"
    assert req.tags["dagster/max_retries"] and req.tags["uhrforge/after_run"] == ingest.run_id
    assert "uhrforge/ingest" not in req.tags
    assert tick() == []  # handled once: the cursor moved past it

    # two shards ingest one after the other between two ticks: a scores run for each, in one
    # tick, in their order (the queue then runs them side by side)
    a, b = run(INGEST_JOB, "shard-00000"), run(INGEST_JOB, "shard-00001")
    reqs = tick()
    assert [(r.partition_key, r.run_key) for r in reqs] == [
        ("shard-00000", scores_run_key(a.run_id)), ("shard-00001", scores_run_key(b.run_id))]
    # a re-run of shard-00000's ingest scores it again (its own run key: not deduplicated away)
    assert len({scores_run_key(r) for r in (ingest.run_id, a.run_id)}) == 2


def test_scores_sensor_ignores_failures_other_jobs_and_uhr_runs(scores_sensor):
    from orchestration.runs import worker_tags

    run, tick = scores_sensor["run"], scores_sensor["tick"]
    failed = run(INGEST_JOB, "shard-00000", fail=True)
    assert failed.status.value == "FAILURE"
    run(SCORES_JOB, "shard-00000")  # a scores run succeeding asks for nothing
    run(INGEST_JOB, "shard-00001", **worker_tags())  # uhr materialize runs shard_scores itself
    assert tick() == []
    # the retry of the failed ingest run succeeds: now its shard is scored
    retry = run(INGEST_JOB, "shard-00000")
    assert [(r.partition_key, r.run_key) for r in tick()] == [("shard-00000", f"scores-after-ingest:{retry.run_id}")]


def test_weekly_bench_schedule_targets_the_newest_checkpoint(tmp_path):
    from assets.bench import BENCH_CODE_VERSION

    # a schedule context needs an instance with a ref (the ephemeral one has none)
    instance = DagsterInstance.local_temp(str(tmp_path))
    when = dt.datetime(2026, 11, 23, 4, tzinfo=dt.timezone.utc)
    ctx = build_schedule_context(instance=instance, scheduled_execution_time=when)
    assert isinstance(weekly_bench_schedule(ctx), SkipReason)
    instance.add_dynamic_partitions("bench_models", ["ckpt-4k", "ckpt-8k"])
    req = weekly_bench_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(req, RunRequest) and req.partition_key == "ckpt-8k" and req.job_name == BENCH_JOB
    assert weekly_bench_schedule.job_name == BENCH_JOB and weekly_bench_schedule.cron_schedule == "0 4 * * 1"
    # already scored with this bench code: skipped; after a code change it is scored again
    instance.report_runless_asset_event(AssetMaterialization(
        "bench_scores", partition="ckpt-8k", tags={"dagster/code_version": BENCH_CODE_VERSION}))
    assert isinstance(weekly_bench_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when)),
                      SkipReason)
    instance.add_dynamic_partitions("bench_models", ["ckpt-10k"])
    req = weekly_bench_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert req.partition_key == "ckpt-10k"


def test_nightly_condition_requests_only_stale_assets_after_the_tick():
    cond = nightly_if_stale("0 2 * * *", "UTC")

    @asset(code_version="1")
    def up():
        return 1

    @asset(deps=[up], automation_condition=cond, code_version="1")
    def down():
        return 2

    instance = DagsterInstance.ephemeral()
    day0 = dt.datetime.now(dt.timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    state = {"cursor": None}

    def requested(t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate_automation_conditions(defs=[up, down], instance=instance, evaluation_time=t,
                                               cursor=state["cursor"])
        state["cursor"] = r.cursor
        return r.total_requested

    tick = lambda d: day0 + dt.timedelta(days=d, hours=14, minutes=1)  # 02:01 the next day
    assert requested(day0) == 0
    assert requested(tick(0)) == 0  # up missing: nothing to compute from
    materialize([up], instance=instance)
    assert requested(day0 + dt.timedelta(hours=1)) == 0  # not before the nightly tick
    assert requested(tick(1)) == 1  # down missing, parent present
    materialize([up, down], selection=[down], instance=instance)
    assert requested(tick(2)) == 0  # nothing changed: nothing re-runs
    materialize([up], selection=[up], instance=instance)
    assert requested(tick(2) + dt.timedelta(hours=8)) == 0
    assert requested(tick(3)) == 1  # parent updated since: re-run at the tick
    assert requested(tick(3) + dt.timedelta(minutes=5)) == 0  # once per tick


def test_apply_automation_sets_conditions_and_keeps_checks():
    from orchestration.automation import NIGHTLY_CRON
    from orchestration.definitions import ASSETS

    # what the module docstring promises, spelled out: raw_pool (new shards come from the sensor)
    # re-runs nightly only after a code change; every other stage-table asset when stale; the
    # bench, release and training assets carry no automation condition
    nightly, ingest = f"nightly_if_stale({NIGHTLY_CRON})", f"code_changed_nightly({NIGHTLY_CRON})"
    expected = {"raw_pool": ingest, "image_scores": nightly, "purification_thresholds": nightly,
                "candidate_pool": nightly, "corpus_100mp": nightly, "captions": nightly, "final_corpus": nightly,
                "bench_split": nightly, "bench_scores": None, "corpus_release": None, "training_set": None,
                "checkpoint": None, "checkpoint_bench": None}
    out = {a.key.to_user_string(): a for a in apply_automation(ASSETS)}
    before = {a.key.to_user_string(): a for a in ASSETS}
    assert set(out) == set(expected)
    labels = {}
    for name, a in out.items():
        cond = a.automation_conditions_by_key.get(a.key)
        labels[name] = cond.get_label() if cond is not None else None
        assert [c.name for c in a.check_specs] == [c.name for c in before[name].check_specs]
    assert labels == expected
    assert set(automation_conditions()) == {k for k, v in expected.items() if v is not None}


def test_nightly_runs_keep_the_run_queue_tags_of_their_stage():
    """A run an automation sensor launches carries that sensor's run tags only: with one sensor
    for every stage, a nightly raw_pool re-run (after a code change) was not held to one ingest at
    a time, and nightly image_scores runs escaped the scores limit. Now each stage-table asset is
    evaluated by exactly one automation sensor whose tags are the retry tags plus the stage's own
    run_tags (the same tags its job's runs carry)."""
    from orchestration.automation import AUTOMATION_SENSORS, INGEST_TAG, RUN_RETRY_TAGS, SCORES_TAG
    from curation.stages.table import STAGES
    from orchestration.definitions import ASSETS, build_definitions, stage_jobs

    owner = {}
    for sensor in AUTOMATION_SENSORS:
        for key in sensor.asset_selection.resolve(ASSETS):
            assert key.to_user_string() not in owner, f"{key} targeted by two automation sensors"
            owner[key.to_user_string()] = sensor
    assert set(owner) == set(STAGES.names())
    assert owner["raw_pool"].run_tags == {**RUN_RETRY_TAGS, **INGEST_TAG}
    assert owner["image_scores"].run_tags == {**RUN_RETRY_TAGS, **SCORES_TAG}
    assert owner["candidate_pool"].run_tags == RUN_RETRY_TAGS
    jobs = {j.name: j for j in stage_jobs()}
    for st in STAGES:  # nightly run tags == the stage job's run tags (what the queue limits read)
        assert owner[st.name].run_tags == jobs[st.job].run_tags, st.name
    names = [s.name for s in build_definitions().sensors]
    assert all(s.name in names for s in AUTOMATION_SENSORS)


def test_gpu_assets_are_in_the_gpu_pool_or_get_gpu_pods():
    from orchestration.automation import GPU_ASSETS
    from orchestration.definitions import ASSETS
    from orchestration.platform import k8s_executor_config

    by_name = {a.key.to_user_string(): a for a in ASSETS}
    assert by_name["corpus_100mp"].op.pool == GPU_POOL
    cfg = k8s_executor_config({})
    for name in GPU_ASSETS:
        limits = cfg["per_step_k8s_config"][name]["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"

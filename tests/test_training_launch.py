"""The training launcher resource: the process a checkpoint stage runs as (local, torchrun, k8s pod)."""

from __future__ import annotations

import sys

import pytest

from orchestration.training_launch import TrainingLauncher, training_launcher_from_env
from training.run import distributed_env

ARGS = ["--scheme", "III", "--tier", "4K"]


def test_one_process_runs_the_pipes_entry_point_with_this_interpreter():
    assert TrainingLauncher().command(ARGS) == [sys.executable, "-m", "orchestration.pipes_train", *ARGS]


def test_several_processes_run_under_torchrun():
    cmd = TrainingLauncher(procs_per_node=4).command(ARGS)
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--standalone"]
    assert cmd[-6:] == ["-m", "orchestration.pipes_train", *ARGS]
    multi = TrainingLauncher(kind="k8s", procs_per_node=8, nodes=2, rdzv_endpoint="head:29500").command(ARGS)
    assert multi[0] == "python" and "--standalone" not in multi
    assert multi[multi.index("--nnodes") + 1] == "2" and multi[multi.index("--rdzv-endpoint") + 1] == "head:29500"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        TrainingLauncher(nodes=2).command(ARGS)
    with pytest.raises(ValueError, match="subprocess or k8s"):
        TrainingLauncher(kind="slurm").command(ARGS)
    with pytest.raises(ValueError, match=">= 1"):
        TrainingLauncher(procs_per_node=0).command(ARGS)


def test_k8s_pod_spec_merges_the_file_and_requests_the_gpus(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text("nodeSelector: {gpu: h20}\nvolumes: [{name: data, persistentVolumeClaim: {claimName: uhr}}]\n"
                 "containers:\n- volumeMounts: [{name: data, mountPath: /data}]\n"
                 "  resources: {limits: {memory: 512Gi}}\n")
    spec = TrainingLauncher(kind="k8s", procs_per_node=8, pod_spec_file=str(f)).pod_spec()
    assert spec["nodeSelector"] == {"gpu": "h20"} and spec["volumes"][0]["name"] == "data"
    c = spec["containers"][0]
    assert c["resources"]["limits"] == {"memory": "512Gi", "nvidia.com/gpu": 8}
    assert c["volumeMounts"][0]["mountPath"] == "/data"
    assert TrainingLauncher(kind="k8s").pod_spec() == {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}]}


def test_k8s_refuses_what_one_pod_cannot_do():
    class Ctx:
        class log:
            @staticmethod
            def info(msg):
                pass

    with pytest.raises(RuntimeError, match="one pod per node"):
        TrainingLauncher(kind="k8s", nodes=2, rdzv_endpoint="h:1", image="x").launch(Ctx, ARGS)
    with pytest.raises(ValueError, match="UHR_TRAIN_IMAGE"):
        TrainingLauncher(kind="k8s").launch(Ctx, ARGS)


def test_settings_from_the_environment():
    la = training_launcher_from_env({"UHR_TRAIN_LAUNCHER": "k8s", "UHR_TRAIN_PROCS_PER_NODE": "8",
                                     "UHR_TRAIN_IMAGE": "reg/uhrforge:1", "UHR_TRAIN_NAMESPACE": "train"})
    assert (la.kind, la.procs_per_node, la.nodes, la.image, la.namespace) == ("k8s", 8, 1, "reg/uhrforge:1", "train")
    assert training_launcher_from_env({}).kind == "subprocess"


def test_ranks_from_the_torchrun_environment():
    assert distributed_env({}) == {"rank": 0, "world": 1, "devices": 1, "nodes": 1}
    assert distributed_env({"RANK": "5", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == \
        {"rank": 5, "world": 16, "devices": 8, "nodes": 2}
    with pytest.raises(RuntimeError, match="multiple"):
        distributed_env({"WORLD_SIZE": "6", "LOCAL_WORLD_SIZE": "4"})

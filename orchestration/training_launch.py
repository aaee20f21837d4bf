"""How the ``checkpoint`` asset starts a training process: a Dagster Pipes launcher resource.

``TrainingLauncher`` turns one stage (``--scheme --tier ...`` arguments of
``python -m orchestration.pipes_train``) into a Pipes invocation:

* ``kind="subprocess"`` (default): a local process through ``PipesSubprocessClient``; with
  ``procs_per_node > 1`` it runs ``torchrun --standalone --nproc-per-node P`` (data-parallel
  processes on this machine: GPUs, or CPU processes with gloo);
* ``kind="k8s"``: a pod through dagster-k8s' ``PipesK8sClient`` on ``image``, under ``torchrun``
  with ``procs_per_node`` GPUs requested as ``nvidia.com/gpu`` limits; ``pod_spec_file`` (YAML
  or JSON) is merged in as the base pod spec (the shared data-root volume, node selectors,
  tolerations). One pod is one node: a multi-node run (``nodes > 1``) gets the rendezvous
  arguments of ``torchrun`` from ``rdzv_endpoint`` and needs one launcher per node (a JobSet /
  PyTorchJob in front of this), which the asset does not create; it refuses ``nodes > 1`` with
  the reason rather than train on one node silently.

Global rank 0 of the training process opens Pipes and reports; the other ranks only train.
Settings come from the environment (``UHR_TRAIN_*``, README "Configuration") through
:func:`training_launcher_from_env`.
"""

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from dagster import ConfigurableResource

from orchestration.resources import env_setting

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY = ["-m", "orchestration.pipes_train"]


class TrainingLauncher(ConfigurableResource):
    """Where and how a training stage runs (see the module docstring)."""

    kind: str = "subprocess"
    procs_per_node: int = 1
    nodes: int = 1
    rdzv_endpoint: str | None = None
    image: str | None = None
    namespace: str | None = None
    pod_spec_file: str | None = None
    python: str | None = None

    def world_size(self) -> int:
        return int(self.procs_per_node) * int(self.nodes)

    def command(self, args: list[str]) -> list[str]:
        """The process to start for ``pipes_train`` ``args``."""
        if self.kind not in ("subprocess", "k8s"):
            raise ValueError(f"training launcher kind {self.kind!r}: use subprocess or k8s")
        if int(self.procs_per_node) < 1 or int(self.nodes) < 1:
            raise ValueError(f"procs_per_node ({self.procs_per_node}) and nodes ({self.nodes}) must be >= 1")
        python = self.python or (sys.executable if self.kind == "subprocess" else "python")
        if self.world_size() == 1:
            return [python, *ENTRY, *args]
        torchrun = [python, "-m", "torch.distributed.run", "--nproc-per-node", str(int(self.procs_per_node))]
        if int(self.nodes) == 1:
            torchrun.append("--standalone")
        else:
            if not self.rdzv_endpoint:
                raise ValueError("a multi-node run needs rdzv_endpoint (UHR_TRAIN_RDZV_ENDPOINT, host:port)")
            torchrun += ["--nnodes", str(int(self.nodes)), "--rdzv-backend", "c10d", "--rdzv-endpoint",
                         self.rdzv_endpoint]
        return [*torchrun, *ENTRY, *args]

    def pod_spec(self) -> dict:
        """The base pod spec of a k8s run: the file's spec, plus the GPU limit on its first container."""
        spec: dict = {}
        if self.pod_spec_file:
            text = Path(self.pod_spec_file).read_text()
            import yaml

            spec = dict(yaml.safe_load(text) or {})
        containers = [dict(c) for c in spec.get("containers") or [{}]]
        first = containers[0]
        resources = dict(first.get("resources") or {})
        limits = dict(resources.get("limits") or {})
        limits.setdefault("nvidia.com/gpu", int(self.procs_per_node))
        resources["limits"] = limits
        first["resources"] = resources
        containers[0] = first
        spec["containers"] = containers
        return spec

    def launch(self, context, args: list[str], extras: Mapping | None = None):
        """Start the stage through Pipes and return the completed invocation."""
        cmd = self.command(args)
        context.log.info(f"training launcher {self.kind}: {shlex.join(cmd)}")
        if self.kind == "subprocess":
            from dagster import PipesSubprocessClient

            return PipesSubprocessClient().run(command=cmd, context=context, cwd=str(REPO_ROOT), extras=extras)
        if int(self.nodes) > 1:
            raise RuntimeError(f"{self.nodes}-node training needs one pod per node (a JobSet or PyTorchJob that runs "
                               f"`{shlex.join(cmd)}` on each node); the k8s launcher starts one pod")
        if not self.image:
            raise ValueError("the k8s training launcher needs an image (UHR_TRAIN_IMAGE)")
        from dagster_k8s import PipesK8sClient  # pragma: no cover - needs a cluster

        return PipesK8sClient().run(context=context, image=self.image, command=cmd,  # pragma: no cover
                                    namespace=self.namespace, base_pod_spec=self.pod_spec(), extras=extras)


def training_launcher_from_env(env: Mapping[str, str] | None = None) -> TrainingLauncher:
    """``UHR_TRAIN_LAUNCHER`` (subprocess | k8s), ``UHR_TRAIN_PROCS_PER_NODE``, ``UHR_TRAIN_NODES``,
    ``UHR_TRAIN_RDZV_ENDPOINT``, ``UHR_TRAIN_IMAGE``, ``UHR_TRAIN_NAMESPACE``, ``UHR_TRAIN_POD_SPEC``."""
    return TrainingLauncher(
        kind=env_setting("UHR_TRAIN_LAUNCHER", env, "subprocess"),
        procs_per_node=int(env_setting("UHR_TRAIN_PROCS_PER_NODE", env, "1")),
        nodes=int(env_setting("UHR_TRAIN_NODES", env, "1")),
        rdzv_endpoint=env_setting("UHR_TRAIN_RDZV_ENDPOINT", env),
        image=env_setting("UHR_TRAIN_IMAGE", env),
        namespace=env_setting("UHR_TRAIN_NAMESPACE", env),
        pod_spec_file=env_setting("UHR_TRAIN_POD_SPEC", env),
    )


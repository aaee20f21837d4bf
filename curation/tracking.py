"""MLflow plumbing shared by the curation, training and bench runs (no Dagster).

:func:`open_experiment` returns an ``MlflowClient`` and the id of ``experiment`` (created when
missing). A local ``sqlite:///`` store keeps its artifacts next to the database
(``<db folder>/artifacts``), never in the working directory's ``./mlruns``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from curation.retry import RetryPolicy, call_with_retry, is_database_unavailable

#: retry budget of one tracking call (not in paper: an operational setting)
TRACKING_RETRY = RetryPolicy(attempts=8, backoff_s=1.0, backoff_max_s=15.0, deadline_s=120.0)


class RetryingClient:
    """An ``MlflowClient`` whose method calls are retried while the backend is unreachable
    (:func:`curation.retry.is_database_unavailable`); other errors pass through at once.
    Attributes that are not methods are the client's own."""

    def __init__(self, client, where: str, policy: RetryPolicy = TRACKING_RETRY):
        self._client, self._where, self._policy = client, where, policy

    @property
    def wrapped(self):
        return self._client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args, **kwargs):
            return call_with_retry(lambda: attr(*args, **kwargs), f"MLflow {name} at {self._where}", self._policy,
                                   transient=is_database_unavailable)

        return call


def artifact_location(uri: str) -> str | None:
    """For a local sqlite store, the artifact root next to the database; None for a server."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


def open_experiment(tracking_uri: str, experiment: str):
    """``(MlflowClient, experiment_id)`` for ``experiment`` on ``tracking_uri`` (created if missing)."""
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "mlflow.store.db.utils", "alembic"):  # the store's first-use chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = RetryingClient(MlflowClient(tracking_uri), _safe_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment,
                                                                     artifact_location=artifact_location(tracking_uri))
    return client, exp_id


def _safe_uri(uri: str) -> str:
    """The tracking URI without credentials (``scheme://host:port/db``): for messages."""
    import re

    return re.sub(r"//[^/@]*@", "//", str(uri))

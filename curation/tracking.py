"""MLflow plumbing shared by the curation, training and bench runs (no Dagster).

:func:`open_experiment` returns an ``MlflowClient`` and the id of ``experiment`` (created when
missing). A local ``sqlite:///`` store keeps its artifacts next to the database
(``<db folder>/artifacts``), never in the working directory's ``./mlruns``.
"""

from __future__ import annotations

import logging
from pathlib import Path


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
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment,
                                                                     artifact_location=artifact_location(tracking_uri))
    return client, exp_id

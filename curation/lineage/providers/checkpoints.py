"""Checkpoints trained on a release that contains the image, and their bench scores (MLflow).

A training run records its data version with :func:`curation.release.release_tags`
(``uhrforge.release`` = the release name); a bench run of that checkpoint sets
``uhrforge.checkpoint_run`` = the training run's id. Without a tracking URI there is no link.
"""

from curation.lineage.core import INFO, Link, LinkProvider, register_link_provider


@register_link_provider
class CheckpointLinks(LinkProvider):
    stage = "checkpoints"
    order = 95
    title = "checkpoints and bench scores"

    def links(self, ctx, ids):
        if not ctx.tracking_uri:
            return []
        from curation.lineage.providers.releases import ReleaseLinks

        rel_links = ReleaseLinks().links(ctx, ids)
        by_release: dict[str, set[str]] = {}
        for lk in rel_links:
            by_release.setdefault(lk.details["release"], set()).add(lk.image_id)
        if not by_release:
            return []
        client = ctx.memo("mlflow_client", lambda: _client(ctx.tracking_uri))
        out = []
        for name, members in sorted(by_release.items()):
            runs = ctx.memo(("ckpt_runs", name), lambda n=name: _search(client, f"tags.`uhrforge.release` = '{n}'"))
            for run in runs:
                benches = ctx.memo(("bench_runs", run.info.run_id), lambda rid=run.info.run_id: _search(
                    client, f"tags.`uhrforge.checkpoint_run` = '{rid}'"))
                scores = {k: v for b in benches for k, v in sorted(b.data.metrics.items())}
                summary = (f"checkpoint run {run.info.run_id} ({run.info.run_name or 'unnamed'}, "
                           f"{run.data.tags.get('uhrforge.scheme', 'scheme n/a')}, tier "
                           f"{run.data.tags.get('uhrforge.tier', 'n/a')}) trained on release {name}; "
                           + (f"bench: {', '.join(f'{k} {v:.4g}' for k, v in scores.items())}" if scores
                              else "no bench run yet"))
                details = {"run_id": run.info.run_id, "release": name, "tags": dict(run.data.tags),
                           "bench_runs": [b.info.run_id for b in benches], "bench_scores": scores}
                out.extend(Link(self.stage, i, INFO, summary, details, f"mlflow:{run.info.run_id}")
                           for i in sorted(members))
        return out


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _search(client, filter_string: str) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, filter_string=filter_string, max_results=200)) if exps else []

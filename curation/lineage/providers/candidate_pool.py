"""candidate_pool [3.1.2]: the relative cuts (entropy, aesthetics) with the threshold version used."""

from curation.lineage.core import register_link_provider
from curation.lineage.providers._util import ManifestLinks, cmp


@register_link_provider
class CandidatePoolLinks(ManifestLinks):
    stage = "candidate_pool"
    required = True
    title = "candidate selection"

    def summarize(self, ctx, r):
        if r.get("aesthetics_applied"):
            aest = (f"aesthetics LAION {cmp(r.get('laion_score'), '>=', r.get('laion_threshold'))} OR "
                    f"ArtiMuse {cmp(r.get('artimuse_score'), '>=', r.get('artimuse_threshold'))}")
        else:
            aest = "aesthetics not applied (no model available; rejects no one)"
        crit = ", ".join(
            f"{c} {'n/a' if c == 'aesthetics' and not r.get('aesthetics_applied') else 'ok' if r.get('pass_' + c) else 'FAIL'}"
            for c in ("exposure", "sharpness", "flatness", "richness", "aesthetics"))
        return (f"richness entropy {cmp(r.get('entropy'), '>=', r.get('entropy_threshold'), '.4f')}; {aest}; "
                f"criteria: {crit}; thresholds {r['threshold_version']}, config {r['config_hash']}"
                + ("" if r.get("passed") else f"; REJECTED: {r.get('reject_reasons') or r.get('reject_reason')}"))

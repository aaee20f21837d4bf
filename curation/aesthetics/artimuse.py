"""ArtiMuse-style MLLM aesthetic scorer (S_A of section 3.1.2) through the project's VLM client.

ArtiMuse is a multimodal LLM that rates an image's aesthetics (a 0-100 score), served behind
the deployment's OpenAI-compatible endpoint. It is configured like every VLM use: model, prompt
and request settings from ``judges.artimuse`` of the profile, the endpoint (and API-key
variable name) from the ``vlm`` resource (``UHR_VLM_ENDPOINT``). Without an endpoint or a model
name the scorer is unavailable and never produces a number: the aesthetics cut then uses the
LAION score alone, or is recorded as not applied (no silent fake score).
"""

from __future__ import annotations

import numpy as np

from curation.aesthetics.base import SCORERS, AestheticScorer, ScorerUnavailableError
from curation.vlm.client import CONFIG_DEFAULTS


@SCORERS.register("artimuse")
class ArtiMuseScorer(AestheticScorer):
    """ArtiMuse scorer through the project's VLM client (:mod:`curation.vlm`).

    Parameters: the keys of ``judges.artimuse`` (:data:`curation.vlm.CONFIG_DEFAULTS`), as
    :func:`curation.vlm.use_config` resolves them (the ``vlm`` resource's endpoint winning):

    * ``endpoint`` -- URL of the OpenAI-compatible endpoint serving ArtiMuse (``vllm serve``);
      null: none configured, the scorer is unavailable;
    * ``model`` -- served model name, recorded in :attr:`version`;
    * the rest (prompts, request and transport settings) goes to the VLM client unchanged.

    Each image is one ``artimuse_aesthetics`` request (prompt ``prompts/artimuse_aesthetics.md``,
    answer: ``overall`` 0-100 plus six dimension scores); S_A = ``overall``. A judge failure
    gives NaN for that image (never a score), so the OR-cut then relies on S_L for it. The
    offline heuristic backend is never used here: S_A is reported only from a model.
    """

    name = "artimuse"
    config_keys = tuple(CONFIG_DEFAULTS)

    def __init__(self, endpoint: str | None = None, model: str | None = None, client=None, **client_cfg) -> None:
        self.endpoint = endpoint or None
        self.model = model or None
        self._client = client
        self._client_cfg = {k: v for k, v in client_cfg.items() if k != "backend"}

    def availability(self) -> tuple[bool, str]:
        if self._client is not None:
            if getattr(self._client, "backend", None) == "heuristic":
                return False, "ArtiMuse needs a model endpoint; the heuristic judge is not ArtiMuse"
            return True, ""
        if self.endpoint is None:
            return False, "ArtiMuse scorer needs a VLM endpoint (UHR_VLM_ENDPOINT, the vlm resource); endpoint=None"
        if self.model is None:
            return False, f"ArtiMuse scorer needs the served model name (judges.artimuse.model; endpoint={self.endpoint})"
        return True, ""

    def _get_client(self):
        if self._client is None:
            from curation.vlm import create_vlm_client

            self._client = create_vlm_client({**self._client_cfg, "endpoint": self.endpoint, "model": self.model})
        return self._client

    @property
    def version(self) -> str:
        return f"artimuse/model={self.model or getattr(self._client, 'model', 'unset')}/endpoint={self.endpoint or 'none'}"

    def _score(self, images: list[np.ndarray]) -> np.ndarray:
        import hashlib

        from curation.vlm import VLMRequest

        reqs = [VLMRequest("artimuse_aesthetics", "view:" + hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest()[:24],
                           [im]) for im in images]
        out = []
        for r in self._get_client().run(reqs):
            v = r.answer.get("overall") if r.status == "ok" and isinstance(r.answer, dict) else None
            out.append(float(v) if isinstance(v, (int, float)) else float("nan"))
        return np.asarray(out, dtype=np.float64)

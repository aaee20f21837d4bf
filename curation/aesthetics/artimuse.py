"""ArtiMuse-style MLLM aesthetic scorer (S_A of section 3.1.2): interface only, for now.

ArtiMuse is a multimodal LLM that rates an image's aesthetics (a 0-100 score). Here it
will be served by the VLM client that arrives with the corpus issue (a vLLM server behind
an OpenAI-compatible endpoint, ``../shared/DESIGN.md`` section 5). Until that client
exists this scorer is never available and never produces a number: the aesthetics cut then
uses the LAION score alone, or is recorded as not applied (no silent fake score).
"""

from __future__ import annotations

import numpy as np

from curation.aesthetics.base import SCORERS, AestheticScorer, ScorerUnavailableError


@SCORERS.register("artimuse")
class ArtiMuseScorer(AestheticScorer):
    """ArtiMuse scorer through the project's VLM client (not yet implemented).

    Parameters (the keys of ``purification.aesthetics.artimuse``):

    * ``endpoint`` -- URL of the judge endpoint (OpenAI-compatible); null: none configured;
    * ``model`` -- served model name, recorded in :attr:`version`.
    """

    name = "artimuse"
    config_keys = ("endpoint", "model")

    def __init__(self, endpoint: str | None = None, model: str | None = None) -> None:
        self.endpoint = endpoint or None
        self.model = model or None

    def availability(self) -> tuple[bool, str]:
        if self.endpoint is None:
            return (
                False,
                "ArtiMuse scorer needs the VLM client (corpus issue) and a judge endpoint; endpoint=None",
            )
        return False, f"VLM client not yet implemented (endpoint={self.endpoint})"

    @property
    def version(self) -> str:
        return f"artimuse/model={self.model or 'unset'}/endpoint={self.endpoint or 'none'}"

    def _score(self, images: list[np.ndarray]) -> np.ndarray:  # pragma: no cover - unreachable
        raise ScorerUnavailableError("ArtiMuse scorer: VLM client not yet implemented")

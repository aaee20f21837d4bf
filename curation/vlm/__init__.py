"""The VLM client: the one way every judge and captioner of uhrforge calls a vision-language model.

Library only (no Dagster, no bench imports). The package:

* :mod:`curation.vlm.client` -- :class:`VLMClient` and the OpenAI-compatible HTTP backend
  (``vllm``): bounded concurrency, retries with backoff, schema retries; the backend registry
  :data:`VLM_BACKENDS`; :func:`create_vlm_client` and :func:`use_config` (the one
  configuration path, below);
* :mod:`curation.vlm.cache` -- the sqlite answer cache keyed by image id, task, model, prompt
  hash, rendered text and request settings;
* :mod:`curation.vlm.tasks` -- :class:`TaskSpec` (prompt file, answer schema, request
  settings, offline answer) and the task registry :data:`TASKS`; the corpus tasks are built in,
  the bench's MSFI / ICS tasks register themselves from the bench's metric modules;
* :mod:`curation.vlm.prompts` -- prompt files under ``prompts/`` with their sha256;
* :mod:`curation.vlm.heuristic` -- the deterministic offline backend (``heuristic``), used
  only when no endpoint is configured, labelled ``heuristic`` in every result.

Configuration: every VLM use (``corpus`` judge, ``bench`` MSFI / ICS judge, ``artimuse``
scorer) reads its model, prompts and request settings from ``judges.<use>`` of the profile
(``configs/paper.yaml``); the deployment's endpoint and the *name* of the API-key variable
come from one place, the Dagster resource ``vlm`` (``UHR_VLM_ENDPOINT``,
``UHR_VLM_API_KEY_ENV``), which overrides the section's ``endpoint`` / ``api_key_env``::

    section = use_config(cfg, "corpus", endpoint=vlm.endpoint, api_key_env=vlm.api_key_env)
    client = create_vlm_client(section, base_dir=layout.root)
    reqs = [VLMRequest("region_artifact", image_id=patch_image_id(img_id, b.box), images=[patch])
            for b, patch in ...]
    for r in client.run(reqs):
        flagged = r.ok and r.answer["artifact"]     # r.status == "judge_failed" is never a pass

An endpoint that is configured but cannot be reached gives ``judge_failed`` results; the
heuristic backend answers only when no endpoint is configured at all.
"""

from curation.vlm.tasks import (  # first: loads heuristic -> client -> cache, prompts
    ARTIFACT_FIELDS,
    CORPUS_REQUEST,
    REASONING,
    TASKS,
    Field,
    TaskSpec,
    get_task,
    parse_judge_json,
    register_task,
)
from curation.vlm.prompts import DEFAULT_PROMPT_DIR, Prompt, load_prompt, prompt_hash
from curation.vlm.cache import VLMCache, cache_key
from curation.vlm.client import (
    BACKEND_HEURISTIC,
    BACKEND_VLLM,
    CONFIG_DEFAULTS,
    JUDGE_FAILED,
    OK,
    VLM_BACKENDS,
    HttpVLMClient,
    ImageInput,
    JudgeResult,
    VLMClient,
    VLMRequest,
    create_vlm_client,
    encode_image,
    image_data_url,
    patch_image_id,
    use_config,
)
from curation.vlm.heuristic import (
    ARTIFACT_THRESHOLDS,
    HEURISTIC_MODEL,
    HeuristicVLMClient,
    blockiness,
    heuristic_aesthetics,
    heuristic_artifact,
    heuristic_ics,
    heuristic_msfi_global,
    heuristic_msfi_local,
    line_discontinuity,
    noise_sigma,
)

__all__ = [
    "ARTIFACT_FIELDS", "ARTIFACT_THRESHOLDS", "BACKEND_HEURISTIC", "BACKEND_VLLM", "CONFIG_DEFAULTS",
    "CORPUS_REQUEST", "DEFAULT_PROMPT_DIR", "HEURISTIC_MODEL", "JUDGE_FAILED", "OK", "REASONING", "TASKS",
    "VLM_BACKENDS", "Field", "HeuristicVLMClient", "HttpVLMClient", "ImageInput", "JudgeResult", "Prompt",
    "TaskSpec", "VLMCache", "VLMClient", "VLMRequest", "blockiness", "cache_key", "create_vlm_client",
    "encode_image", "get_task", "heuristic_aesthetics", "heuristic_artifact", "heuristic_ics",
    "heuristic_msfi_global", "heuristic_msfi_local", "image_data_url", "line_discontinuity", "load_prompt",
    "noise_sigma", "parse_judge_json", "patch_image_id", "prompt_hash", "register_task", "use_config",
]

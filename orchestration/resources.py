"""Resources configured from the environment (embedded defaults: a local data root).

Every project setting is read here, through :func:`env_setting` (README.md, "Configuration",
lists each variable, its default and the resource that reads it). The CLI and the demo build
their resources with :func:`curation_resources` (explicit data root, raw root and profile) and
pass them to ``orchestration.definitions.build_definitions``; nothing writes ``os.environ``.

* ``UHR_DATA_ROOT``  data root for manifests, thumbnails, reports (default ``data/demo``)
* ``UHR_RAW_ROOT``   folder of raw shard folders (default ``<data root>/raw``)
* ``UHR_PROFILE``    config profile: paper (default), demo, test or a YAML path
* ``UHR_LAION_CLIP`` / ``UHR_LAION_HEAD``  CLIP ViT-L/14 id or path, LAION head path

Platform (production services; every one has an embedded default, secrets only from the
environment through :class:`dagster.EnvVar`, never in logs, metadata or manifests):

* ``UHR_S3_ENDPOINT`` / ``UHR_S3_BUCKET`` / ``UHR_S3_PREFIX`` / ``UHR_S3_SECURE``  object store
  (MinIO, SeaweedFS, AWS) for blobs and manifests; ``UHR_S3_ACCESS_KEY`` / ``UHR_S3_SECRET_KEY``
  its credentials; ``UHR_S3_RAW_PREFIX`` (e.g. ``raw``) makes the store the raw-shard source.
  No endpoint: no sync, unless ``UHR_STORE_ROOT`` names a local folder to use as the store.
* ``MLFLOW_TRACKING_URI`` / ``UHR_MLFLOW_EXPERIMENT``  MLflow (default: sqlite under the data root)
* ``UHR_VLM_ENDPOINT`` / ``UHR_VLM_API_KEY_ENV``  the OpenAI-compatible VLM server (vLLM) of every
  VLM use (corpus judge, bench judge, ArtiMuse; resource ``vlm``, :class:`VLMEndpoint`), overriding
  ``judges.<use>.endpoint`` of the profile; the key's *name* is configured, its value read from
  that variable at call time. Models, prompts and request settings: ``judges.<use>``.
* ``UHR_DVC_REMOTE`` / ``UHR_DVC_ENDPOINT`` / ``UHR_DVC_REPO``  DVC remote URL (``s3://bucket/dvc``),
  its endpoint, the DVC repository (default: the nearest ``.dvc/`` above the data root)
* ``DAGSTER_PG_HOST`` / ``DAGSTER_PG_PORT`` / ``DAGSTER_PG_USER`` / ``DAGSTER_PG_DB`` /
  ``DAGSTER_PG_PASSWORD``  Postgres for Dagster storage (``infra/dagster/postgres.yaml``)
"""


import os
from pathlib import Path
from typing import ClassVar, Mapping
from urllib.parse import quote

from dagster import ConfigurableResource, EnvVar

from curation.config import Config, load_config
from curation.layout import DataLayout


def env_setting(name: str, env: Mapping[str, str] | None = None, default: str | None = None) -> str | None:
    """The one reader of project settings from the environment (``os.environ``, or ``env``):
    the stripped value of ``name``, ``default`` when it is unset or blank. Every ``UHR_*`` setting
    is read through here by the resources below (README, "Configuration", lists them all)."""
    v = (os.environ if env is None else env).get(name)
    v = v.strip() if isinstance(v, str) else v
    return v if v else default


def env_flag(name: str, env: Mapping[str, str] | None = None, default: bool = False) -> bool:
    """A boolean setting: 1/true/yes/on (any case) is True, 0/false/no/off False, unset ``default``."""
    v = env_setting(name, env)
    if v is None:
        return default
    return v.lower() in ("1", "true", "yes", "on")


def default_data_root(env: Mapping[str, str] | None = None) -> str:
    return env_setting("UHR_DATA_ROOT", env) or str(Path("data") / "demo")


class CurationSettings(ConfigurableResource):
    """Where the data lives and which profile decides."""

    data_root: str
    raw_root: str | None = None
    profile: str = "paper"
    config_dir: str | None = None

    def config(self) -> Config:
        return load_config(self.profile, self.config_dir)

    def layout(self) -> DataLayout:
        return DataLayout.at(self.data_root)

    def raw_dir(self) -> Path:
        return Path(self.raw_root) if self.raw_root else Path(self.data_root) / "raw"


class AestheticModels(ConfigurableResource):
    """The aesthetic scorers of section 3.1.2 (LAION predictor, ArtiMuse-style VLM scorer).

    ``clip_model`` / ``head_path`` override the profile's LAION settings (a HF cache id or a
    local folder, and the linear head's .pth). Unavailable scorers are reported with their
    reason and the criterion runs on the others (or is not applied at all).
    """

    clip_model: str | None = None
    head_path: str | None = None

    def load(self, cfg: Config, vlm: "VLMEndpoint | None" = None) -> tuple[list, dict[str, str]]:
        """(available scorer objects, {name: reason} of the unavailable ones).

        ArtiMuse is configured like every VLM use: ``judges.artimuse`` of the profile, the
        endpoint and API-key variable name of the ``vlm`` resource overriding the section's."""
        from curation.aesthetics import create_scorer
        from curation.vlm import use_config

        section = cfg["purification"]["aesthetics"]
        available, unavailable = [], {}
        for name in section.get("scorers", []):
            opts = dict(section.get(name) or {})
            if name == "laion":
                if self.clip_model:
                    opts["clip_model"] = self.clip_model
                if self.head_path:
                    opts["head_path"] = self.head_path
            if name == "artimuse":
                opts = use_config(cfg, "artimuse", endpoint=vlm.endpoint if vlm else None,
                                  api_key_env=vlm.api_key_env if vlm else None)
            try:
                scorer = create_scorer(name, opts)
                ok, reason = scorer.availability()
                if ok:
                    scorer.load()  # corrupt weights show up here, not mid-shard
            except Exception as exc:  # a broken adapter must not take the shard down
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            if ok:
                available.append(scorer)
            else:
                unavailable[name] = reason
        return available, unavailable


def _value(v):
    """A field's value; an unresolved ``EnvVar`` (resource used outside a run) is read now."""
    return v.get_value() if isinstance(v, EnvVar) else v


class _NoSecretsRepr:
    """``repr``/``str`` list the configuration, the fields named in ``SECRET_FIELDS`` masked."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        fields = []
        for name in type(self).model_fields:
            v = getattr(self, name, None)
            if name in self.SECRET_FIELDS:
                v = "***" if v else None
            fields.append(f"{name}={v!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    __str__ = __repr__


class ObjectStoreResource(_NoSecretsRepr, ConfigurableResource):
    """The object store for blobs and manifests (``curation.store``), plus the worker sync.

    With an ``endpoint``: an S3 bucket through the ``minio`` SDK. Without one: a local folder
    (``local_root``), or no store at all -- then :meth:`prepare` / :meth:`publish` do nothing
    and the data root is the only copy (the laptop default).
    ``raw_prefix`` makes ``<store>/<raw_prefix>/<shard>/`` the raw-shard source: a stage
    downloads the shard into the local raw root before ingest.
    Every curation asset takes this resource (key ``store``) and syncs itself: :meth:`prepare`
    before it runs, :meth:`publish` after its manifest is written (``assets/_store.py``).
    """

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("access_key", "secret_key")

    endpoint: str | None = None
    bucket: str = "uhrforge"
    prefix: str = ""
    access_key: str | None = None
    secret_key: str | None = None
    secure: bool = False
    region: str | None = None
    local_root: str | None = None
    raw_prefix: str | None = None
    #: S3 calls are retried with backoff for at most this many attempts / seconds each (a
    #: restarting server), then fail with one line (``curation.store.StoreUnavailable``)
    retry_attempts: int = 10
    retry_deadline_s: float = 120.0

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint or self.local_root)

    def get_store(self):
        from curation.store import LocalStore, RetryPolicy, S3Store

        if self.endpoint:
            return S3Store(self.endpoint, self.bucket, self.prefix, _value(self.access_key), _value(self.secret_key),
                           secure=self.secure or None, region=self.region,
                           retry=RetryPolicy(attempts=self.retry_attempts, deadline_s=self.retry_deadline_s))
        if self.local_root:
            return LocalStore(self.local_root)
        raise RuntimeError("no object store configured (set UHR_S3_ENDPOINT or UHR_STORE_ROOT)")

    def store_or_default(self, data_root: str | os.PathLike):
        """The configured store, else the embedded default: the folder ``<data_root>/store``
        (releases always need a place for their blobs)."""
        from curation.store import LocalStore

        return self.get_store() if self.enabled else LocalStore(Path(data_root).resolve() / "store")

    def describe(self) -> dict:
        """For metadata and logs: where things go, never the credentials."""
        if not self.enabled:
            return {"kind": "none"}
        d = self.get_store().describe()
        if self.raw_prefix:
            d["raw_prefix"] = self.raw_prefix
        return d

    def prepare(self, settings: "CurationSettings", stage: str, shard: str | None = None) -> dict:
        """Fetch ``stage``'s inputs for ``shard`` into the local data root (no-op without a store)."""
        if not self.enabled:
            return {}
        from curation.store import prepare_stage

        return prepare_stage(self.get_store(), settings.layout(), stage, shard, raw_root=settings.raw_dir(),
                             raw_prefix=self.raw_prefix)

    def publish(self, settings: "CurationSettings", stage: str, shard: str | None = None) -> dict:
        """Upload what ``stage`` wrote for ``shard``: blobs, then the manifest (no-op without a store)."""
        if not self.enabled:
            return {}
        from curation.store import publish_stage

        return publish_stage(self.get_store(), settings.layout(), stage, shard)

    def list_raw_shards(self) -> list[str]:
        from curation.store import list_raw_shards

        return list_raw_shards(self.get_store(), self.raw_prefix or "raw")


class MLflowSettings(ConfigurableResource):
    """MLflow tracking: a server (``http://...``) in production, sqlite under the data root otherwise."""

    tracking_uri: str | None = None
    experiment: str = "uhrforge-curation"

    def uri(self, data_root: str | os.PathLike | None = None) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        root = Path(data_root or default_data_root()).resolve()
        return f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


class VLMEndpoint(ConfigurableResource):
    """The deployment's OpenAI-compatible VLM server (vLLM in compose), the one place every VLM
    use takes its endpoint from: the corpus judge (``corpus_100mp``), the bench's MSFI / ICS judge
    (``bench_scores``) and the ArtiMuse scorer (``image_scores``, ``purification_thresholds``).

    Each use reads its model, prompts and request settings from ``judges.<use>`` of the profile
    (:func:`curation.vlm.use_config`); ``endpoint`` and ``api_key_env`` (the *name* of the
    variable holding the key, read by the client at call time) override the section's. With no
    endpoint here nor in the section the offline heuristic backend answers, labelled
    ``heuristic``; an endpoint that cannot be reached gives ``judge_failed`` results."""

    endpoint: str | None = None
    api_key_env: str | None = None

    def client_config(self, cfg: Config, use: str) -> dict:
        """The ``curation.vlm.create_vlm_client`` config of ``use`` (``corpus``, ``bench``, ``artimuse``)."""
        from curation.vlm import use_config

        return use_config(cfg, use, endpoint=self.endpoint, api_key_env=self.api_key_env)

    def client(self, cfg: Config, use: str, base_dir: str | os.PathLike | None = None):
        """The VLM client of ``use``; a relative ``cache_dir`` resolves against ``base_dir`` (the data root)."""
        from curation.vlm import create_vlm_client

        return create_vlm_client(self.client_config(cfg, use), base_dir=base_dir)


def vlm_endpoint_from_env(env: Mapping[str, str] | None = None) -> VLMEndpoint:
    """The ``vlm`` resource: ``UHR_VLM_ENDPOINT``, ``UHR_VLM_API_KEY_ENV`` (None when unset)."""
    return VLMEndpoint(endpoint=env_setting("UHR_VLM_ENDPOINT", env), api_key_env=env_setting("UHR_VLM_API_KEY_ENV", env))


class DVCRemote(ConfigurableResource):
    """The DVC remote (``s3://bucket/dvc`` on the object store; a local folder by default).

    Credentials are not fields: :meth:`env` hands the object store's variables to ``dvc`` as the
    standard AWS ones at call time."""

    url: str | None = None
    endpoint_url: str | None = None
    name: str = "storage"
    #: the DVC repository that versions the data root (default: the nearest ``.dvc/`` above it)
    repo: str | None = None

    def remote_url(self, data_root: str | os.PathLike | None = None) -> str:
        return self.url or str(Path(data_root or default_data_root()).resolve() / "dvc-remote")

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        for src, dst in (("UHR_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"), ("UHR_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")):
            if env.get(src) and not env.get(dst):
                env[dst] = env[src]
        if self.endpoint_url:
            env.setdefault("AWS_ENDPOINT_URL", self.endpoint_url)
        return env


class PostgresSettings(_NoSecretsRepr, ConfigurableResource):
    """Postgres for Dagster storage and the ``uhr_releases`` table; sqlite under the data root when no host."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password",)

    host: str | None = None
    port: int = 5432
    user: str = "dagster"
    password: str | None = None
    db: str = "dagster"

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    def url(self, db: str | None = None) -> str:
        """The SQLAlchemy URL, password included: hand it to a driver, never to a log."""
        if not self.host:
            raise RuntimeError("no Postgres configured (DAGSTER_PG_HOST)")
        auth = quote(self.user, safe="")
        password = _value(self.password)
        if password:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{db or self.db}"

    def masked_url(self, db: str | None = None) -> str:
        if not self.host:
            return "none"
        return f"postgresql://{self.user}:***@{self.host}:{self.port}/{db or self.db}"


def _env(name: str, env) -> str | None:
    return env_setting(name, env)


def _secret(name: str, env):
    """An ``EnvVar`` (resolved at run time, shown by name in the UI) when the variable is set."""
    return EnvVar(name) if _env(name, env) else None


def platform_resources_from_env(env=None) -> dict:
    """The platform's resources: object store, MLflow, VLM endpoint, DVC remote, Postgres."""
    env = os.environ if env is None else env
    endpoint = _env("UHR_S3_ENDPOINT", env)
    secure = env_flag("UHR_S3_SECURE", env)
    store = ObjectStoreResource(
        endpoint=endpoint,
        bucket=_env("UHR_S3_BUCKET", env) or "uhrforge",
        prefix=_env("UHR_S3_PREFIX", env) or "",
        access_key=_secret("UHR_S3_ACCESS_KEY", env) if endpoint else None,
        secret_key=_secret("UHR_S3_SECRET_KEY", env) if endpoint else None,
        secure=secure or bool(endpoint and endpoint.startswith("https://")),
        region=_env("UHR_S3_REGION", env),
        local_root=None if endpoint else _env("UHR_STORE_ROOT", env),
        raw_prefix=_env("UHR_S3_RAW_PREFIX", env),
    )
    dvc_endpoint = _env("UHR_DVC_ENDPOINT", env)
    if not dvc_endpoint and endpoint:
        dvc_endpoint = endpoint if "://" in endpoint else f"{'https' if secure else 'http'}://{endpoint}"
    pg_host = _env("DAGSTER_PG_HOST", env)
    return {
        "store": store,
        "mlflow": MLflowSettings(
            tracking_uri=_env("MLFLOW_TRACKING_URI", env),
            experiment=_env("UHR_MLFLOW_EXPERIMENT", env) or "uhrforge-curation",
        ),
        "vlm": vlm_endpoint_from_env(env),
        "dvc": DVCRemote(url=_env("UHR_DVC_REMOTE", env), endpoint_url=dvc_endpoint, repo=_env("UHR_DVC_REPO", env)),
        "postgres": PostgresSettings(
            host=pg_host,
            port=int(_env("DAGSTER_PG_PORT", env) or 5432),
            user=_env("DAGSTER_PG_USER", env) or "dagster",
            password=_secret("DAGSTER_PG_PASSWORD", env) if pg_host else None,
            db=_env("DAGSTER_PG_DB", env) or "dagster",
        ),
    }


def aesthetic_models_from_env(env: Mapping[str, str] | None = None) -> AestheticModels:
    """The aesthetic scorers' overrides: ``UHR_LAION_CLIP`` / ``UHR_LAION_HEAD`` (ArtiMuse's endpoint: the ``vlm`` resource)."""
    env = os.environ if env is None else env
    return AestheticModels(
        clip_model=_env("UHR_LAION_CLIP", env),
        head_path=_env("UHR_LAION_HEAD", env),
    )


def curation_resources(data_root: str | os.PathLike, raw_root: str | os.PathLike | None = None,
                       profile: str = "paper", env: Mapping[str, str] | None = None) -> dict:
    """The resources for an explicit data root, raw root and profile (the CLI, the demo); the
    aesthetic models and the platform (store, MLflow, VLM, DVC, Postgres) from the environment."""
    return {
        "settings": CurationSettings(data_root=str(data_root), raw_root=str(raw_root) if raw_root else None,
                                     profile=profile),
        "aesthetics": aesthetic_models_from_env(env),
        **platform_resources_from_env(env),
    }


def resources_from_env(env: Mapping[str, str] | None = None) -> dict:
    """Every resource from the environment: ``UHR_DATA_ROOT``, ``UHR_RAW_ROOT``, ``UHR_PROFILE`` + the rest
    (the code location's ``defs``, for ``dagster dev``)."""
    return curation_resources(default_data_root(env), _env("UHR_RAW_ROOT", os.environ if env is None else env),
                              env_setting("UHR_PROFILE", env) or "paper", env)

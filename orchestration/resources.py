"""Resources configured from the environment (embedded defaults: a local data root).

* ``UHR_DATA_ROOT``  data root for manifests, thumbnails, reports (default ``data/demo``)
* ``UHR_RAW_ROOT``   folder of raw shard folders (default ``<data root>/raw``)
* ``UHR_PROFILE``    config profile: paper (default), demo, test or a YAML path
* ``UHR_LAION_CLIP`` / ``UHR_LAION_HEAD``  CLIP ViT-L/14 id or path, LAION head path
"""


import os
from pathlib import Path

from dagster import ConfigurableResource

from curation.config import Config, load_config
from curation.layout import DataLayout


def default_data_root() -> str:
    return os.environ.get("UHR_DATA_ROOT", str(Path("data") / "demo"))


class CurationSettings(ConfigurableResource):
    """Where the data lives and which profile decides."""

    data_root: str
    raw_root: str | None = None
    profile: str = "paper"

    def config(self) -> Config:
        return load_config(self.profile)

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
    artimuse_endpoint: str | None = None

    def load(self, cfg: Config) -> tuple[list, dict[str, str]]:
        """(available scorer objects, {name: reason} of the unavailable ones)."""
        from curation.aesthetics import create_scorer

        section = cfg["purification"]["aesthetics"]
        available, unavailable = [], {}
        for name in section.get("scorers", []):
            opts = dict(section.get(name) or {})
            if name == "laion":
                if self.clip_model:
                    opts["clip_model"] = self.clip_model
                if self.head_path:
                    opts["head_path"] = self.head_path
            if name == "artimuse" and self.artimuse_endpoint:
                opts["endpoint"] = self.artimuse_endpoint
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


def resources_from_env() -> dict:
    data_root = default_data_root()
    return {
        "settings": CurationSettings(
            data_root=data_root,
            raw_root=os.environ.get("UHR_RAW_ROOT") or None,
            profile=os.environ.get("UHR_PROFILE", "paper"),
        ),
        "aesthetics": AestheticModels(
            clip_model=os.environ.get("UHR_LAION_CLIP") or None,
            head_path=os.environ.get("UHR_LAION_HEAD") or None,
            artimuse_endpoint=os.environ.get("UHR_ARTIMUSE_ENDPOINT") or None,
        ),
    }

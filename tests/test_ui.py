"""The Dagster UI on materialised data, in headless Chromium (Debian package, driven by playwright).

Copies the session's materialised test profile (its sqlite Dagster home included), releases it,
starts ``dagster-webserver`` on 127.0.0.1 in its own process group, then checks in the
browser that the asset graph shows every asset and that an asset page shows its latest
materialisation with metadata, and that the release asset shows its DVC/tag/lineage metadata and
its audit check. Saves screenshots (``docs/ui_asset_graph.png`` and
``docs/ui_release.png`` when ``UHR_UPDATE_SCREENSHOT=1``, else under the test's tmp dir).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (infra/install_services.sh)"),
]


@pytest.fixture(scope="module")
def webserver(materialised, tmp_path_factory):
    from dagster import DagsterInstance

    from infra.services import free_port, wait_for_port
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import dagster_home_for
    from orchestration.resources import AestheticModels, CurationSettings

    base = tmp_path_factory.mktemp("ui")
    data = materialised.copy(base / "data")  # the session's materialised pipeline, its runs included
    raw = data / "raw"
    home = dagster_home_for(data)
    instance = DagsterInstance.from_config(str(home))
    defs = build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
        "aesthetics": AestheticModels(),
    })
    rel = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": "ui-v1"}}}}, instance=instance)
    assert rel.success
    instance.dispose()
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), UHR_DATA_ROOT=str(data), UHR_RAW_ROOT=str(raw), UHR_PROFILE="test")
    log = open(base / "webserver.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, 120, proc, base / "webserver.log")
        yield {"url": f"http://127.0.0.1:{port}", "base": base}
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def _dismiss_modal(page) -> None:
    """First visit shows a 'Join the Dagster community' dialog: skip it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=15_000)
        skip.click()
    except Exception:
        pass


def test_asset_graph_and_materialisations_render(webserver):
    from playwright.sync_api import sync_playwright

    url = webserver["url"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/locations/uhrforge/asset-groups/curation", wait_until="domcontentloaded", timeout=90_000)
            _dismiss_modal(page)
            # the asset graph draws one node per asset
            for name in ("raw_pool", "image_scores", "purification_thresholds", "candidate_pool"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
            page.get_by_text("Loading", exact=False).first.wait_for(state="hidden", timeout=60_000)
            time.sleep(2)  # let the graph layout settle for the screenshot
            shot = (REPO / "docs" / "ui_asset_graph.png") if os.environ.get("UHR_UPDATE_SCREENSHOT") else \
                webserver["base"] / "ui_asset_graph.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            # an asset page shows its latest materialisation and its metadata
            page.goto(f"{url}/assets/candidate_pool?view=events", wait_until="domcontentloaded", timeout=90_000)
            page.get_by_text("threshold_version").first.wait_for(timeout=90_000)
            page.get_by_text("dagster/row_count").first.wait_for(timeout=30_000)
            page.get_by_text("shard-00000").first.wait_for(timeout=30_000)  # one event per partition
            # the release: its metadata (DVC, tag, per-image lineage) and its audit check
            page.goto(f"{url}/assets/corpus_release?view=events", wait_until="domcontentloaded", timeout=90_000)
            page.get_by_text("release/ui-v1").first.wait_for(timeout=90_000)
            page.get_by_text("lineage_file").first.wait_for(timeout=30_000)
            page.get_by_text("manifest_sha256").first.wait_for(timeout=30_000)
            page.goto(f"{url}/assets/corpus_release?view=checks", wait_until="domcontentloaded", timeout=90_000)
            page.get_by_text("release_audit").first.wait_for(timeout=60_000)
            time.sleep(1)
            shot = (REPO / "docs" / "ui_release.png") if os.environ.get("UHR_UPDATE_SCREENSHOT") else \
                webserver["base"] / "ui_release.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()

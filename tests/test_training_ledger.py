"""GPU-hour ledger: device hours = count x wall clock; CPU hours never GPU hours; Table A1; forecast."""

from __future__ import annotations

import pytest

from curation.config import load_config
from training import ledger
from training.ledger import LedgerRow


@pytest.fixture(scope="module")
def paper():
    return load_config("paper")


def test_rows_with_a_known_wall_clock(tmp_path):
    gpu = LedgerRow("III", "4K", epochs=0.5, device_type="NVIDIA H20", device_count=8, wall_clock_s=5400.0,
                    samples=47868, steps=5984)
    assert gpu.unit == "GPU" and gpu.device_hours == 12.0 and gpu.gpu_hours == 12.0 and gpu.cpu_hours is None
    assert gpu.samples_per_s == pytest.approx(47868 / 5400)
    assert gpu.device_seconds_per_sample == pytest.approx(8 * 5400 / 47868)
    cpu = LedgerRow("I_full", "4K", epochs=1.5, device_type="CPU (x86_64, 2 cores)", device_count=1,
                    wall_clock_s=90.0, samples=6)
    assert cpu.unit == "CPU" and cpu.gpu_hours is None and cpu.cpu_hours == pytest.approx(0.025)
    path = tmp_path / "ledger.jsonl"
    ledger.append(path, gpu)
    ledger.append(path, cpu)
    back = ledger.read(path)
    assert [r.scheme for r in back] == ["III", "I_full"] and back[0].device_hours == 12.0
    assert '"gpu_hours": null' in path.read_text().splitlines()[1]


def test_table_a1_layout_with_ours_beside_the_paper(paper):
    rows = [LedgerRow("III", "4K", 0.5, "NVIDIA H20", 8, 5400.0, 47868),
            LedgerRow("III", "4K", 0.25, "NVIDIA H20", 8, 1800.0, 23934),
            LedgerRow("I_full", "4K", 1.5, "CPU (x86_64, 2 cores)", 1, 90.0, 6, profile="tiny")]
    table = ledger.table_a1(paper, rows)
    assert [(r["scheme"], r["tier"], r["paper_epochs"], r["paper_gpu_hours"]) for r in table] == [
        ("I_full", "4K", 6.0, 21888), ("I_full", "8K", 0.25, 10752),
        ("I_lora", "4K", 3.0, 10368), ("I_lora", "8K", 0.25, 10752), ("I_lora", "10K", 0.32, 28416),
        ("II", "4K", 3.0, 9216),
        ("III", "4K", 4.3, 8448), ("III", "8K", 2.9, 18432), ("III", "10K", 1.7, 23040)]
    iii = table[6]
    assert iii["ours_gpu_hours"] == pytest.approx(16.0) and iii["ours_epochs"] == 0.75 and iii["ours_cpu_hours"] is None
    full = table[0]
    assert full["ours_gpu_hours"] is None and full["ours_cpu_hours"] == pytest.approx(0.025)
    assert full["paper_gpu_s_per_sample"] == pytest.approx(21888 * 3600 / (95735 * 6))
    md = ledger.format_table_a1(table)
    assert "| FLUX.2-I (Full) | 4K | 6.00 | 21,888 |" in md and "our CPU h" in md


def test_forecast_of_a_paper_scale_run(paper):
    # measured device-seconds per sample: one per tier, or per (scheme, tier)
    fc = ledger.forecast(paper, {"4K": 2.0, ("III", "10K"): 10.0}, device_type="NVIDIA H20")
    by = {(r["scheme"], r["tier"]): r for r in fc}
    assert set(by) == {("I_full", "4K"), ("I_lora", "4K"), ("II", "4K"), ("III", "4K"), ("III", "10K")}
    assert by[("I_full", "4K")]["device_hours"] == pytest.approx(95735 * 6 * 2.0 / 3600)
    assert by[("III", "10K")]["device_hours"] == pytest.approx(95735 * 1.7 * 10.0 / 3600)
    assert by[("III", "10K")]["ratio_to_paper"] == pytest.approx(95735 * 1.7 * 10.0 / 3600 / 23040)
    assert all(r["unit"] == "GPU" and r["images"] == 95735 for r in fc)
    # a paper-implied rate gives back the paper's hours
    rate = 8448 * 3600 / (95735 * 4.3)
    assert ledger.forecast(paper, {("III", "4K"): rate})[0]["device_hours"] == pytest.approx(8448)

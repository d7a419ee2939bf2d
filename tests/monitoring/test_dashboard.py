"""The Grafana dashboard JSON matches the schema of the fields sealfuse relies on and covers the
required sections (queue, throughput, latency, failures, GPU, host memory)."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from tests.monitoring import dashboard as D


def test_dashboard_matches_the_schema() -> None:
    jsonschema.validate(D.load(), D.SCHEMA)


@pytest.mark.parametrize("breakage", ["hard_coded_datasource", "no_datasource_variable",
                                      "panel_without_targets", "bad_gridpos"])
def test_the_schema_rejects_what_would_break_an_import(breakage: str) -> None:
    dash = copy.deepcopy(D.load())
    panel = next(p for p in dash["panels"] if p["type"] == "timeseries")
    if breakage == "hard_coded_datasource":
        panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    elif breakage == "no_datasource_variable":
        dash["templating"]["list"] = [v for v in dash["templating"]["list"] if v["type"] != "datasource"]
    elif breakage == "panel_without_targets":
        panel["targets"] = []
    else:
        panel["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dash, D.SCHEMA)


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = D.load()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24, p["title"]
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_covers_every_section_and_metric_family() -> None:
    dash = D.load()
    rows = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert rows == {"Queue", "Throughput", "Latency", "Failures", "GPU", "Host"}
    exprs = " ".join(e for _, _, e in D.expressions(dash))
    for metric in ("sealfuse_queue_jobs", "sealfuse_slurm_jobs", "sealfuse_jobs_total",
                   "sealfuse_frames_total", "sealfuse_job_duration_seconds_bucket",
                   "sealfuse_job_queue_wait_seconds_bucket", "sealfuse_worker_restarts_total",
                   "sealfuse_gpu_utilization_ratio", "sealfuse_gpu_fb_used_bytes",
                   "sealfuse_gpu_fb_free_bytes", "sealfuse_gpu_enc_utilization_ratio",
                   "sealfuse_gpu_dec_utilization_ratio", "node_memory_MemAvailable_bytes",
                   "sealfuse_spool_filesystem_avail_bytes"):
        assert metric in exprs, metric
    assert "$" not in exprs, "a Grafana variable is left without a substitution"

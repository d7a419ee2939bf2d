"""The shipped Grafana dashboard: the JSON schema of the fields sealfuse relies on, and its panel
expressions with Grafana's variables replaced so that Prometheus can evaluate them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "sealfuse-dashboard.json"
DATASOURCE = {"type": "object", "required": ["type", "uid"], "additionalProperties": False,
              "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "templating", "panels", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {
            "type": "object", "required": ["list"],
            "properties": {"list": {
                "type": "array",
                "contains": {"type": "object", "required": ["name", "type", "query"],
                             "properties": {"name": {"const": "datasource"},
                                            "type": {"const": "datasource"},
                                            "query": {"const": "prometheus"}}},
                "items": {"type": "object", "required": ["name", "type"],
                          "properties": {"name": {"type": "string", "pattern": "^[a-z_]+$"},
                                         "type": {"enum": ["datasource", "query", "custom",
                                                           "interval", "constant"]}}},
            }},
        },
        "panels": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "title": {"type": "string", "minLength": 1},
                    "type": {"enum": ["row", "timeseries", "stat", "bargauge", "gauge", "table"]},
                    "gridPos": {"type": "object", "required": ["h", "w", "x", "y"],
                                "properties": {"h": {"type": "integer", "minimum": 1},
                                               "w": {"type": "integer", "minimum": 1, "maximum": 24},
                                               "x": {"type": "integer", "minimum": 0, "maximum": 23},
                                               "y": {"type": "integer", "minimum": 0}}},
                    "datasource": DATASOURCE,
                    "fieldConfig": {"type": "object", "required": ["defaults"],
                                    "properties": {"defaults": {"type": "object", "properties": {
                                        "unit": {"enum": ["short", "s", "bytes", "percentunit"]}}}}},
                    "targets": {"type": "array", "items": {
                        "type": "object", "required": ["refId", "expr", "datasource"],
                        "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                                       "expr": {"type": "string", "minLength": 1},
                                       "legendFormat": {"type": "string"},
                                       "datasource": DATASOURCE}}},
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {"properties": {"targets": False}},
                "else": {"required": ["datasource", "targets", "fieldConfig"],
                         "properties": {"targets": {"minItems": 1}}},
            },
        },
    },
}
# Grafana's variables and macros, as a dashboard showing every instance over the last hour uses them.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
                 "$instance": ".*"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL with variables substituted) for every panel target."""
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, value in SUBSTITUTIONS.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], t["refId"], expr))
    return out

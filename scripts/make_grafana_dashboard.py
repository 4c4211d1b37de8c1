"""Write docs/grafana-dashboard.json: a Grafana dashboard over PaperTrader's metrics.

Run again after adding a metric worth a panel (``python scripts/make_grafana_dashboard.py``);
tests/test_metrics.py checks that every query names a series papertrader/metrics.py defines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(expr, legend)], kind)
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Requests per second by instruction", "reqps",
     [("sum by (instruction) (rate(papertrader_requests_total[$__rate_interval]))",
       "{{instruction}}")], "timeseries"),
    ("Failed requests per second by outcome", "reqps",
     [('sum by (outcome) (rate(papertrader_requests_total{outcome!="ok"}[$__rate_interval]))',
       "{{outcome}}")], "timeseries"),
    ("Request latency p50 / p99", "s",
     [("histogram_quantile(0.5, sum by (le) "
       "(rate(papertrader_request_duration_seconds_bucket[$__rate_interval])))", "p50"),
      ("histogram_quantile(0.99, sum by (le) "
       "(rate(papertrader_request_duration_seconds_bucket[$__rate_interval])))", "p99")],
     "timeseries"),
    ("Open client connections", "short",
     [("sum by (instance) (papertrader_client_connections_open)", "{{instance}}")],
     "timeseries"),
    ("Orders queued and decided per second", "ops",
     [("sum by (side) (rate(papertrader_orders_queued_total[$__rate_interval]))",
       "queued {{side}}"),
      ("sum by (status) (rate(papertrader_orders_decided_total[$__rate_interval]))",
       "{{status}}")], "timeseries"),
    ("Order outcomes told to clients", "ops",
     [("sum by (outcome) (rate(papertrader_order_outcomes_total[$__rate_interval]))",
       "{{outcome}}")], "timeseries"),
    ("Order drain duration p99", "s",
     [("histogram_quantile(0.99, sum by (le) "
       "(rate(papertrader_order_drain_duration_seconds_bucket[$__rate_interval])))", "p99")],
     "timeseries"),
    ("Order queue depth", "short", [("max(papertrader_order_queue_depth)", "queued")],
     "stat"),
    ("Market feed age", "s", [("max(papertrader_market_feed_age_seconds)", "age")], "stat"),
    ("Linked workers", "short", [("max(papertrader_linked_workers)", "linked")], "stat"),
    ("Master link up, per worker", "short",
     [("papertrader_master_link_up", "{{instance}}")], "timeseries"),
    ("Session cache hit ratio", "percentunit",
     [('sum(rate(papertrader_session_cache_lookups_total{result="hit"}[$__rate_interval])) / '
       "sum(rate(papertrader_session_cache_lookups_total[$__rate_interval]))", "hits")],
     "timeseries"),
    ("Rate-limit refusals per second", "reqps",
     [("sum by (instruction) (rate(papertrader_rate_limit_refusals_total[$__rate_interval]))",
       "{{instruction}}")], "timeseries"),
    ("Worker handshakes", "ops",
     [("sum by (outcome) (rate(papertrader_worker_handshakes_total[$__rate_interval]))",
       "{{outcome}}")], "timeseries"),
    ("Market updates and drain failures", "ops",
     [("sum by (outcome) (rate(papertrader_market_updates_total[$__rate_interval]))",
       "update {{outcome}}"),
      ("sum(rate(papertrader_order_drain_failures_total[$__rate_interval]))",
       "drain postponed")], "timeseries"),
    ("Master request latency p99", "s",
     [("histogram_quantile(0.99, sum by (le, instruction) "
       "(rate(papertrader_link_request_duration_seconds_bucket[$__rate_interval])))",
       "{{instruction}}")], "timeseries"),
]  # fmt: skip


def panel(
    index: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str
) -> dict[str, Any]:
    width = 6 if kind == "stat" else 12
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": (index * 12) % 24, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "PaperTrader",
        "uid": "papertrader",
        "tags": ["papertrader"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },  # fmt: skip
        "panels": [panel(i, *spec) for i, spec in enumerate(PANELS)],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")

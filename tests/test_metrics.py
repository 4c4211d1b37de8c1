"""Prometheus metrics and /healthz: a real master and worker scraped over HTTP, and
the documentation and dashboard checked against the series that exist."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from test_e2e_support import ROOT, Servers, new_user, running

from papertrader import metrics
from papertrader.protocol import ErrorCode, Instruction, Message
from papertrader.services.ports import free_port
from papertrader.stack.runfiles import running_servers


def series(registry: object) -> dict[str, str]:
    """Exposed name -> type of every papertrader_* metric of a registry."""
    found = {}
    for family in registry.collect():  # type: ignore[attr-defined]
        if family.name.startswith("papertrader_"):
            suffix = "_total" if family.type == "counter" else ""
            found[family.name + suffix] = family.type
    return found


def test_every_metric_is_documented_and_every_dashboard_query_names_a_real_one() -> None:
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    known = {**series(metrics.MASTER), **series(metrics.WORKER)}
    for name, kind in known.items():
        assert re.search(rf"\| `{name}` \| {kind} \|", operations), f"{name} not in OPERATIONS.md"
    documented = set(re.findall(r"^\| `(papertrader_\w+)` \|", operations, re.MULTILINE))
    assert documented == set(known), documented ^ set(known)

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs
            for n in re.findall(r"papertrader_\w+", e)}  # fmt: skip
    assert used <= set(known), used - set(known)
    assert {"papertrader_requests_total", "papertrader_market_feed_age_seconds"} <= used


def test_the_outcome_of_a_request_is_ok_or_its_error_code() -> None:
    ok = Message(Instruction.STATE_SWITCH_SUCCESS, (1,))
    refused = Message(Instruction.DATA_FAIL, (int(ErrorCode.UNKNOWN_ASSET), "no such asset"))
    assert metrics.outcome_of([ok]) == "ok"
    assert metrics.outcome_of([refused]) == "UNKNOWN_ASSET"
    error = Message(Instruction.ERROR, (int(ErrorCode.TIMEOUT), "idle"))
    assert metrics.outcome_of([error]) == "TIMEOUT"


def scrape(port: int) -> dict[str, float]:
    """sample name{labels} -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_master_and_worker_serve_metrics_and_health(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    servers = Servers(tmp_path, redis_url, database_url, workers=1,
                      env_extra={"PT_METRICS_ENABLED": "true"})  # fmt: skip
    master_metrics, worker_metrics = free_port(), free_port()
    servers.procs["master"].env["PT_METRICS_PORT"] = str(master_metrics)
    servers.procs["worker-1"].env["PT_METRICS_PORT"] = str(worker_metrics)
    with running(servers):
        servers.wait_quotes()
        with servers.client() as client:
            new_user(client, "metrics")
            client.quote("AAPL")
            client.buy("SPY", 2)
            try:
                client.quote("NOPE")
            except Exception:
                pass

        status, body = healthz(worker_metrics)
        assert status == 200 and body["status"] == "ok" and body["master_link"] == "up"
        status, body = healthz(master_metrics)
        assert status == 200 and body["status"] == "ok" and body["linked_workers"] == 1

        worker = scrape(worker_metrics)
        assert worker["papertrader_master_link_up{}"] == 1
        assert worker["papertrader_requests_total{instruction=LOGIN,outcome=ok}"] == 2
        assert worker["papertrader_orders_queued_total{side=buy}"] == 1
        assert worker["papertrader_order_outcomes_total{outcome=filled,side=buy}"] == 1
        quote = "papertrader_requests_total{instruction=GET_ASSET_VALUE_CURRENT,outcome=%s}"
        assert worker[quote % "UNKNOWN_ASSET"] == 1 and worker[quote % "ok"] >= 1
        # Each quote's two frames are counted, timed, whichever path answered them.
        assert worker["papertrader_requests_total{instruction=SWITCH_STATE,outcome=ok}"] >= 2
        timed = "papertrader_request_duration_seconds_count{instruction=%s}"
        assert worker[timed % "GET_ASSET_VALUE_CURRENT"] == worker[quote % "ok"] + 1
        assert worker["papertrader_client_connections_total{}"] >= 2
        assert worker["papertrader_request_duration_seconds_count{instruction=PLACE_ORDER}"] == 1
        assert any(k.startswith("process_resident_memory_bytes") for k in worker)
        assert not any(k.startswith("papertrader_linked_workers") for k in worker)

        master = scrape(master_metrics)
        assert master["papertrader_linked_workers{}"] == 1
        assert master["papertrader_orders_decided_total{side=buy,status=filled}"] == 1
        assert master["papertrader_order_drain_duration_seconds_count{}"] >= 1
        assert master["papertrader_worker_handshakes_total{outcome=accepted}"] == 1
        assert master["papertrader_market_feed_age_seconds{}"] < 30
        assert master["papertrader_link_requests_total{instruction=LOGIN,outcome=ok}"] == 2

        announced = {s.name: s.metrics for s in running_servers(servers.state_dir)}
        assert announced == {"master": f"127.0.0.1:{master_metrics}",
                             "worker-1": f"127.0.0.1:{worker_metrics}"}  # fmt: skip

        missing = urllib.request.Request(f"http://127.0.0.1:{worker_metrics}/other")
        try:
            urllib.request.urlopen(missing, timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404


def test_a_worker_whose_metrics_port_is_taken_says_so(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    import socket
    import subprocess
    import sys

    from test_worker_support import worker_env

    port, metrics_port = free_port(), free_port()
    env = worker_env(tmp_path, redis_url, port, free_port(), metrics_enabled="1",
                     metrics_port=str(metrics_port))  # fmt: skip
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", metrics_port))
        blocker.listen()
        result = subprocess.run(
            [sys.executable, "-m", "papertrader_cli", "worker", "run"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen for metrics on 127.0.0.1:{metrics_port}" in result.stderr
    assert "Traceback" not in result.stderr

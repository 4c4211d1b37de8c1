"""A real master reading price history from a real streaming replica (database_read_url),
while everything it writes goes to the primary. The replica's promotion under trading
load is `make faults` (scripts/faults.py --pg-replica)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psycopg2
from test_e2e_support import Servers, new_user, running

from papertrader.services import destroy_services, postgres_replica, start_services
from papertrader.services.state import load_state
from papertrader.store.migrate import migrate
from papertrader.store.roles import master_role_for


def _app_connections(url: str) -> int:
    """Client sessions on the application database other than this one."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row else 0


def test_price_history_comes_from_the_replica(tmp_path: Path) -> None:
    state = tmp_path / "services"
    urls = start_services(state)
    replica = None
    try:
        migrate(urls.owner_url, master_role=master_role_for(urls.owner_url, urls.database_url))
        primary = load_state(state).postgres
        assert primary is not None
        replica = postgres_replica.create(primary)
        read_url = postgres_replica.failover_url([replica], target="prefer-standby")
        servers = Servers(
            tmp_path,
            urls.redis_url,
            primary.admin_url,  # the test registers the workers
            env_extra={"PT_DATABASE_READ_URL": read_url},
        )
        with running(servers):
            servers.wait_quotes()
            with servers.client() as client:
                new_user(client)
                deadline = time.monotonic() + 30  # bars reach the replica a moment later
                while not (bars := client.price_history("AAPL", "day")):
                    assert time.monotonic() < deadline, servers.logs()
                    time.sleep(0.3)
                assert bars[0].close > 0
            # the master's read pool is the only client of the replica's database
            assert _app_connections(replica.admin_url) >= 1
    finally:
        if replica is not None:
            postgres_replica.stop(replica)
            shutil.rmtree(replica.root, ignore_errors=True)
        destroy_services(state)

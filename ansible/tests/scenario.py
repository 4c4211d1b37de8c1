"""The real run behind `tox -e ansible`: the playbooks applied to local hosts.

"Hosts" on this machine (ansible_connection=local), each with its own
directory and ports under one temporary directory: two masters (the first with
private Redis and PostgreSQL from `pt services up`, process mode since there
is no systemd here; the second a standby) and workers in two regions. Then:

1. site.yml deploys everything; the standby holds a 0600 copy of the first
   master's key pair and session-signing key, and the first master is active;
2. the master lists every worker of every region as connected;
3. Redis speaks TLS only: each worker's settings name a rediss:// URL, a
   worker host connects through it (verifying the certificate with the
   worker's CA; CLIENT INFO names the TLS port, the only one Redis listens
   on), and a plaintext connection from a worker host is refused;
   a registered user logs in through a worker of each region (`pt client`);
4. a second site.yml run changes nothing (changed=0 for every host), and so
   does workers.yml;
5. the sources get a new version; a roll-out where the first worker cannot
   start (a bad setting) stops there: the other workers are left alone;
6. with the setting fixed, rolling-update.yml runs while clients
   loop quote requests with failover through the master's worker list: every
   worker runs the new version in a new process, the master is untouched,
   and no client request fails for good;
7. the master lists every worker again;
8. kill -9 of the active master: the standby takes over (the epoch moves on),
   every worker links to it, clients log in and buy through each region; the
   killed master, started again, stays a standby;
9. kill -9 of the Redis primary: the Sentinels promote the replica, and clients
   buy through each region again;
10. site.yml once more: the killed Redis comes back as the new primary's replica
   (in sync, the Sentinels naming the new primary), not as a second primary.

Redis runs with a replica (on the standby's host) and three Sentinels (on both
masters' hosts and a worker's), PostgreSQL with a synchronous streaming replica
(on the standby's host): every master and worker reaches Redis through the
Sentinels, the masters name both PostgreSQL servers. After the first run and
again after the master's take-over, ha_probe.py checks that the replica is in
sync with the same users, that the Sentinels agree on the primary and see each
other and the replica, and that PostgreSQL streams to its synchronous replica.

Everything this script started is stopped at the end, also on failure or
Ctrl-C: the services (their stop scripts), the private Redis/PostgreSQL, the
gpg-agents, the clients. PT_ANSIBLE_KEEP=1 keeps the directory for a look.

    python ansible/tests/scenario.py            # the whole scenario
    python ansible/tests/scenario.py inventory DIR   # only write DIR/inventory.yml
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ANSIBLE_DIR = Path(__file__).resolve().parent.parent
TESTS_DIR = ANSIBLE_DIR / "tests"

MASTER = "pt-master"
#: A standby master: the first one's key pair, active only while the first is not.
STANDBY = "pt-master-2"
MASTERS = (MASTER, STANDBY)
#: The Redis replica and the PostgreSQL replica live on the standby master's host, the
#: three Sentinels on both masters' and a worker's.
REPLICA_HOST = STANDBY
SENTINELS = (MASTER, STANDBY, "eu-1")
#: worker name -> region: two regions, one worker each (enough for per-region
#: settings, logins through each region, and clients failing over during the
#: rolling update; each host more costs a virtualenv and a deployment).
WORKERS = {"eu-1": "eu", "us-1": "us"}
USER = "ansible-alice"
PASSWORD = "correct horse battery"
#: What build-wheel.sh packs; copied once so the run sees one fixed source tree.
SOURCES = ("pyproject.toml", "setup.py", "requirements.txt", "README.md", "papertrader", "cli")
NEW_VERSION = "0.1.0.post1"
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


class ScenarioFailed(Exception):
    """A check failed; the message says which and what was seen."""


def log(message: str) -> None:
    print(f"[scenario {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the inventory ---------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while picked, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_inventory(work: Path) -> Path:
    """ansible/tests/inventory.yml's shape, for hosts under ``work``, on free ports."""
    master_port, standby_port, *ports = free_ports(2 + 2 * len(WORKERS) + len(SENTINELS))
    sentinel_ports = dict(zip(SENTINELS, ports[2 * len(WORKERS) :], strict=True))
    ports = ports[: 2 * len(WORKERS)]
    worker_ports, web_ports = ports[: len(WORKERS)], ports[len(WORKERS) :]
    names = [*MASTERS, *WORKERS]
    metrics_ports = dict(zip(names, free_ports(len(names)), strict=True))
    python = sys.executable

    def host(name: str) -> dict[str, Any]:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "papertrader_root": str(work / "hosts" / name),
            "papertrader_metrics_port": metrics_ports[name],
        }

    regions: dict[str, dict[str, Any]] = {}
    for (name, region), port, web_port in zip(
        WORKERS.items(), worker_ports, web_ports, strict=True
    ):
        group = regions.setdefault(f"workers_{region}", {"vars": {"region": region}, "hosts": {}})
        group["vars"]["worker_settings"] = {"client_idle_timeout": 120 if region == "eu" else 90}
        group["hosts"][name] = host(name) | {
            "worker_port": port,
            "worker_web_port": web_port,
            "worker_advertise": f"127.0.0.1:{port}",
        }
    inventory = {
        "all": {
            "vars": {
                "papertrader_service_mode": "process",
                "papertrader_create_user": False,
                "papertrader_user": "root",
                "papertrader_group": "root",
                "papertrader_build_dir": str(work / "build"),
                "papertrader_source_dir": str(work / "src"),
                "papertrader_assets": ["AAPL", "MSFT", "GOOG"],
                "papertrader_update_interval": 0.5,
                "papertrader_log_memory_entries": 200,
                "papertrader_master_port": master_port,
                "papertrader_extra_settings": {"bcrypt_cost": 4},
                "papertrader_prometheus_targets_file": str(work / "prometheus-targets.json"),
                "master_listen_host": "127.0.0.1",
                "master_advertise_host": "127.0.0.1",
                "worker_listen_host": "127.0.0.1",
                "worker_allowed_ips": ["127.0.0.1/32"],
                "worker_connect_delay": 1,
                "worker_connect_retries": 60,
                # A primary silent for 1 s is down: the failover at the end takes seconds.
                "redis_sentinel_down_after_ms": 1000,
                "redis_sentinel_failover_timeout_ms": 5000,
            },
            "children": {
                "masters": {
                    "hosts": {
                        MASTER: host(MASTER),
                        # On this machine both masters share the address: its own port.
                        STANDBY: host(STANDBY) | {"master_port": standby_port},
                    }
                },
                "workers": {"children": regions},
                # Redis with a replica and three Sentinels, PostgreSQL with a streaming
                # replica, on hosts that are there anyway (each host more costs a
                # virtualenv).
                "redis_replicas": {"hosts": {REPLICA_HOST: {}}},
                "postgresql_replicas": {"hosts": {REPLICA_HOST: {}}},
                "sentinels": {
                    "hosts": {
                        name: {"redis_sentinel_port": sentinel_ports[name]} for name in SENTINELS
                    }
                },
            },
        }
    }
    path = work / "inventory.yml"
    # JSON is YAML: no PyYAML needed to write it.
    path.write_text("---\n" + json.dumps(inventory, indent=2) + "\n")
    return path


# -- running things --------------------------------------------------------------------
class Scenario:
    def __init__(self, work: Path) -> None:
        self.work = work
        snapshot_sources(work / "src")
        self.inventory = write_inventory(work)
        self.doc = json.loads(self.inventory.read_text().removeprefix("---\n"))
        self.clients: subprocess.Popen[bytes] | None = None
        self.timings: list[tuple[str, float]] = []
        env = dict(os.environ)
        env.update(
            ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
            ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
            ANSIBLE_REMOTE_TEMP=str(work / "ansible-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PT_ANSIBLE_TEST="1",
        )
        for var in [v for v in env if v.startswith("PT_") and v != "PT_ANSIBLE_TEST"]:
            del env[var]  # nothing of the caller's PaperTrader settings leaks in
        self.env = env

    # hosts ------------------------------------------------------------------------
    def root(self, name: str) -> Path:
        return self.work / "hosts" / name

    def worker_port(self, name: str) -> int:
        region = WORKERS[name]
        groups = self.doc["all"]["children"]["workers"]["children"]
        return int(groups[f"workers_{region}"]["hosts"][name]["worker_port"])

    def master_address(self, name: str = MASTER) -> str:
        host = self.doc["all"]["children"]["masters"]["hosts"][name]
        port = host.get("master_port", self.doc["all"]["vars"]["papertrader_master_port"])
        return f"127.0.0.1:{port}"

    def pt(
        self, *args: str, stdin: str | None = None, check: bool = True, config: str = MASTER
    ) -> subprocess.CompletedProcess[str]:
        """`pt` of a master host (the first one's by default), with its settings file."""
        env = dict(self.env, PT_CONFIG=str(self.root(config) / "etc" / "master.toml"))
        result = subprocess.run(
            [str(self.root(config) / "venv" / "bin" / "pt"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise ScenarioFailed(
                f"pt {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def playbook(
        self, name: str, *extra: str, should_fail: bool = False
    ) -> dict[str, dict[str, int]]:
        """Run a playbook, echoing its output; returns the PLAY RECAP by host."""
        started = time.monotonic()
        log_path = self.work / f"{name}.{len(self.timings)}.log"
        cmd = ["ansible-playbook", "-i", str(self.inventory), str(ANSIBLE_DIR / name), *extra]
        log(" ".join(cmd))
        with log_path.open("w") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ANSIBLE_DIR,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    out.write(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
                rc = proc.wait()
            except BaseException:
                # Interrupted: stop ansible before the clean-up, or it goes on starting things.
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed))
        recap = parse_recap(log_path.read_text())
        log(f"{name}: exit {rc} in {elapsed:.0f} s; recap {recap}")
        if should_fail and rc == 0:
            raise ScenarioFailed(f"ansible-playbook {name} should have failed (log: {log_path})")
        if rc != 0 and not should_fail:
            raise ScenarioFailed(f"ansible-playbook {name} exited {rc} (log: {log_path})")
        return recap

    # checks -----------------------------------------------------------------------
    def listed_workers(self, config: str = MASTER) -> list[dict[str, Any]]:
        document = json.loads(self.pt("workers", "list", "--json", config=config).stdout)
        return workers_of(document)

    def check_all_listed(self, config: str = MASTER) -> None:
        listed = {w["name"]: w for w in self.listed_workers(config)}
        for name, region in WORKERS.items():
            entry = listed.get(name)
            if entry is None or not entry.get("connected"):
                raise ScenarioFailed(f"the master does not list {name} as connected: {listed}")
            if entry.get("region") != region:
                raise ScenarioFailed(
                    f"{name} is listed in region {entry.get('region')}, not {region}"
                )
        log(f"the master lists every worker of every region: {sorted(listed)}")

    def check_configs(self) -> None:
        """Settings rendered from the inventory: private files, per-region values."""
        files = {name: self.root(name) / "etc" / "master.toml" for name in MASTERS}
        files |= {name: self.root(name) / "etc" / "worker.toml" for name in WORKERS}
        for path in files.values():
            mode = path.stat().st_mode & 0o777
            if mode != 0o600:
                raise ScenarioFailed(f"{path} has mode {mode:o}, not 600 (it holds passwords)")
            text = path.read_text()
            for line in (
                'assets = ["AAPL", "MSFT", "GOOG"]',
                "update_interval = 0.5",
                "log_memory_entries = 200",
                'redis_url = "rediss://',
            ):
                if line not in text:
                    raise ScenarioFailed(f"{path} lacks {line!r}")
        for name, region in WORKERS.items():
            text = files[name].read_text()
            idle = 120 if region == "eu" else 90
            for line in (
                f'region = "{region}"',
                f"client_idle_timeout = {idle}",
                "master_fingerprint = ",
                f"://pt-worker-{name}:",  # redis_url: its own Redis user, no other
                # every master, the first one first
                f'master_connect = "{",".join(self.master_address(m) for m in MASTERS)}"',
            ):
                if line not in text:
                    raise ScenarioFailed(f"{files[name]} lacks {line!r}")
        # Database roles: each master has its own role's URL, the owner's is in migrate.toml
        # alone; workers have none.
        for name in MASTERS:
            master_text = files[name].read_text()
            if "://pt-master:" not in master_text:
                raise ScenarioFailed(f"{files[name]} lacks the master's own Redis user's URL")
            if 'database_url = "postgresql://papertrader_master:' not in master_text:
                raise ScenarioFailed(f"{files[name]} lacks the master role's database URL")
            if "owner" in master_text:
                raise ScenarioFailed(f"{files[name]} holds the schema owner's URL")
            if f'master_advertise = "{self.master_address(name)}"' not in master_text:
                raise ScenarioFailed(f"{files[name]} does not advertise its own address")
        self.check_sentinel_settings(files)
        if (self.root(STANDBY) / "etc" / "migrate.toml").exists():
            raise ScenarioFailed("the standby master got the schema owner's URL")
        migrate_toml = self.root(MASTER) / "etc" / "migrate.toml"
        if migrate_toml.stat().st_mode & 0o777 != 0o600 or (
            'database_owner_url = "postgresql://papertrader_owner:' not in migrate_toml.read_text()
        ):
            raise ScenarioFailed(f"{migrate_toml} is not 0600 with the owner's URL")
        for name in WORKERS:
            if "database" in files[name].read_text() or "postgresql" in files[name].read_text():
                raise ScenarioFailed(f"{files[name]} holds a database URL: workers get none")
        log(
            "settings files: mode 0600, shared and per-region values as in the inventory; "
            "the master's own database role, the owner's URL for migrations only, none on workers"
        )

    def sentinel_addresses(self) -> str:
        hosts = self.doc["all"]["children"]["sentinels"]["hosts"]
        return ",".join(f"127.0.0.1:{hosts[name]['redis_sentinel_port']}" for name in SENTINELS)

    def check_sentinel_settings(self, files: dict[str, Path]) -> None:
        """Every master and worker reaches Redis through the Sentinels (their password in
        a 0600 file of its own, the same everywhere) and waits for a replica; the masters
        name both PostgreSQL servers and read history from the replica."""
        passwords = set()
        for name in {*files, *SENTINELS}:
            path = self.root(name) / "etc" / "sentinel.password"
            if path.stat().st_mode & 0o777 != 0o600:
                raise ScenarioFailed(f"{path} is not 0600")
            passwords.add(path.read_text())
        if len(passwords) != 1:
            raise ScenarioFailed("the hosts hold different Sentinel passwords")
        for name, path in files.items():
            text = path.read_text()
            for line in (
                f'redis_sentinels = "{self.sentinel_addresses()}"',
                f'redis_sentinel_password_file = "{self.root(name)}/etc/sentinel.password"',
                "redis_min_replicas_ack = 1",
            ):
                if line not in text:
                    raise ScenarioFailed(f"{path} lacks {line!r}")
            if name in MASTERS and not re.search(
                r'(?m)^database_url = "postgresql://papertrader_master:[^@"]+@127\.0\.0\.1:\d+,'
                r'127\.0\.0\.1:\d+/papertrader\?target_session_attrs=read-write"$',
                text,
            ):
                raise ScenarioFailed(f"{path} lacks the multi-host database_url")
            if name in MASTERS and "target_session_attrs=prefer-standby" not in text:
                raise ScenarioFailed(f"{path} lacks database_read_url (the replica first)")
        for name in SENTINELS:
            config = self.root(name) / "state" / "services" / "sentinel" / "sentinel.conf"
            if config.stat().st_mode & 0o777 != 0o600:
                raise ScenarioFailed(f"{config} is not 0600")
        log(
            "every master and worker reaches Redis through the Sentinels "
            f"{self.sentinel_addresses()} (password file 0600, the same on every host) "
            "with redis_min_replicas_ack = 1; "
            "the masters name both PostgreSQL servers"
        )

    def ha_probe(self, *args: str) -> str:
        """ha_probe.py with the first master's PaperTrader."""
        python = self.root(MASTER) / "venv" / "bin" / "python"
        result = subprocess.run(
            [str(python), str(TESTS_DIR / "ha_probe.py"), *args],
            capture_output=True, text=True, env=self.env, timeout=90,
        )  # fmt: skip
        if result.returncode != 0:
            raise ScenarioFailed(f"ha_probe.py {args[0]}: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def services_dir(self, name: str) -> str:
        return str(self.root(name) / "state" / "services")

    def check_replication(self, failed_over: bool = False) -> None:
        """The Redis replica is in sync with the same users, the Sentinels agree on the
        primary and see each other; PostgreSQL streams to its synchronous replica.
        ``failed_over``: the Redis nodes have swapped roles."""
        redis_nodes = [self.services_dir(MASTER), self.services_dir(REPLICA_HOST)]
        if failed_over:
            redis_nodes.reverse()
        seen = self.ha_probe(
            "check",
            *redis_nodes,
            self.services_dir(MASTER),
            self.services_dir(REPLICA_HOST),
            *(self.services_dir(name) for name in SENTINELS),
        )
        log(f"replication: {seen}")

    def redis_failover(self) -> None:
        """kill -9 of the Redis primary: the Sentinels promote the replica and clients
        trade on through each region, every process finding the new primary by itself."""
        sentinel_dirs = [self.services_dir(name) for name in SENTINELS]
        before = set(json.loads(self.ha_probe("primary", *sentinel_dirs)))
        record = json.loads((Path(self.services_dir(MASTER)) / "services.json").read_text())
        os.kill(int(record["redis"]["pid"]), signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 60
        while True:
            named = set(json.loads(self.ha_probe("primary", *sentinel_dirs)))
            if len(named) == 1 and named != before and None not in named:
                break
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"no Sentinel failover after 60 s: {before} -> {named}")
            time.sleep(0.2)
        promoted = time.monotonic() - killed
        replica = json.loads((Path(self.services_dir(REPLICA_HOST)) / "services.json").read_text())
        if named != {f"127.0.0.1:{replica['redis']['port']}"}:
            raise ScenarioFailed(f"the Sentinels name {named}, not the replica")
        for worker in WORKERS:
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.client(worker, "--json", "buy", "MSFT", "1")
                    break
                except ScenarioFailed:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        log(
            f"kill -9 of the Redis primary: the Sentinels named the replica {named} after "
            f"{promoted:.1f} s; clients bought through each region "
            f"{time.monotonic() - killed:.1f} s after the kill"
        )

    def check_standby_keys(self) -> None:
        """The standby master holds a copy of the first one's key pair and session-signing
        key: directories 0700, files 0600, owned as the first master's."""
        first, copy = (self.root(name) / "state" / "master-gnupg" for name in MASTERS)
        originals = sorted(
            p.relative_to(first)
            for p in first.rglob("*")
            if p.is_file() and not p.name.startswith(("S.", ".#lk")) and p.name != "random_seed"
        )
        if Path("session-signing.pem") not in originals:
            raise ScenarioFailed(f"no session-signing.pem in {first}: {originals}")
        identity = ("private-keys-v1.d", "session-signing.pem")
        secret = [r for r in originals if r.parts[0] in identity]
        if len(secret) < 2:
            raise ScenarioFailed(f"no secret key in {first}: {originals}")
        for relative in originals:
            path = copy / relative
            same = path.is_file() and path.read_bytes() == (first / relative).read_bytes()
            if not path.is_file() or (relative in secret and not same):
                raise ScenarioFailed(f"{path} is not a copy of {first / relative}")
            if path.stat().st_mode & 0o777 != 0o600:
                raise ScenarioFailed(f"{path} has mode {path.stat().st_mode & 0o777:o}, not 600")
        for directory in [copy, *(p for p in copy.rglob("*") if p.is_dir())]:
            if directory.stat().st_mode & 0o777 != 0o700:
                raise ScenarioFailed(f"{directory} is not 0700")
        fingerprints = {self.pt("master", "keygen", config=m, check=False).stdout for m in MASTERS}
        if len(fingerprints) != 1:
            raise ScenarioFailed(f"the masters have different keys: {fingerprints}")
        log(f"the standby master has the first one's key pair ({len(originals)} files, 0600)")

    def active_master(self) -> dict[str, Any]:
        """`pt status --json`'s active master, as PostgreSQL records it."""
        document = json.loads(self.pt("status", "--json", check=False).stdout)
        active: dict[str, Any] = document.get("active_master") or {}
        return active

    def wait_active(self, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            active = self.active_master()
            if active.get("lock_held") and active.get("address") == self.master_address(name):
                return active
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"{name} is not the active master after {timeout} s: {active}")
            time.sleep(0.5)

    def master_failover(self) -> None:
        """kill -9 of the active master: the standby takes over, every worker links to it,
        clients log in and trade on; the killed master comes back as a standby."""
        before = self.wait_active(MASTER)
        pidfile = self.root(MASTER) / "run" / "papertrader-master.pid"
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        killed = time.monotonic()
        after = self.wait_active(STANDBY)
        took = time.monotonic() - killed
        if after.get("epoch") != before.get("epoch", 0) + 1:
            raise ScenarioFailed(f"the take-over did not raise the epoch: {before} -> {after}")
        deadline = time.monotonic() + 60
        while True:
            try:
                self.check_all_listed(config=STANDBY)
                break
            except ScenarioFailed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for worker in WORKERS:
            self.client(worker, "login", USER, "--password-stdin", stdin=PASSWORD + "\n")
            self.client(worker, "--json", "buy", "AAPL", "1")
        # Started again (systemd's Restart= does this on real hosts): a standby now.
        quiet([str(self.root(MASTER) / "bin" / "papertrader-master"), "start"], self.env)
        time.sleep(2)
        if self.active_master().get("address") != self.master_address(STANDBY):
            raise ScenarioFailed("the restarted master took the active role back")
        log(
            f"kill -9 of the active master: {STANDBY} took over in {took:.1f} s "
            f"(epoch {after.get('epoch')}); every worker linked to it; clients traded on"
        )

    def check_redis_tls(self) -> None:
        """Each worker host reaches Redis over verified TLS with its own settings; in clear,
        it is refused (Redis has no plaintext port; its TLS port drops a plaintext client)."""
        probe = TESTS_DIR / "redis_probe.py"
        services = self.root(MASTER) / "state" / "services" / "services.json"
        for name in [*MASTERS, *WORKERS]:
            python = self.root(name) / "venv" / "bin" / "python"
            config = self.root(name) / "etc" / ("master.toml" if name in MASTERS else "worker.toml")
            env = dict(self.env, PT_CONFIG=str(config))
            # On the master host, also: Redis's only port is its TLS port.
            extra = ["--services-json", str(services)] if name == MASTER else []
            result = subprocess.run(
                [str(python), str(probe), *extra],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            if result.returncode != 0:
                raise ScenarioFailed(
                    f"Redis over TLS from {name}: exit {result.returncode}\n"
                    f"{result.stdout}{result.stderr}"
                )
            log(f"{name}: {result.stdout.strip()}")

    def client(self, worker: str, *args: str, stdin: str | None = None) -> str:
        port = self.worker_port(worker)
        session = self.work / f"session-{worker}.json"
        result = self.pt(
            "client",
            "--worker",
            f"127.0.0.1:{port}",
            "--session-file",
            str(session),
            "--timeout",
            "20",
            *args,
            stdin=stdin,
        )
        return result.stdout

    def check_logins(self) -> None:
        self.client(
            "eu-1",
            "register",
            USER,
            "--email",
            "alice@example.com",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        for region in sorted(set(WORKERS.values())):
            worker = next(name for name, r in WORKERS.items() if r == region)
            self.client(worker, "login", USER, "--password-stdin", stdin=PASSWORD + "\n")
            quote = json.loads(self.client(worker, "--json", "quote", "AAPL"))
            log(f"logged in through {worker} ({region}); AAPL quote: {json.dumps(quote)[:120]}")

    def check_idempotent(self, recap: dict[str, dict[str, int]], playbook: str) -> None:
        changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
        expected = {*MASTERS, *WORKERS}
        if not expected <= set(recap):
            raise ScenarioFailed(
                f"{playbook}: hosts missing from the recap: {expected - set(recap)}"
            )
        if changed:
            raise ScenarioFailed(f"second run of {playbook} changed something: {changed}")
        log(f"second run of {playbook}: changed=0 for every host")

    def worker_pids(self) -> dict[str, int | None]:
        """Each worker's pid, None for one that does not run."""
        pids: dict[str, int | None] = {}
        for name in WORKERS:
            pidfile = self.root(name) / "run" / "papertrader-worker.pid"
            pids[name] = int(pidfile.read_text().strip()) if pidfile.exists() else None
        return pids

    def host_vars(self, name: str) -> dict[str, Any]:
        groups = self.doc["all"]["children"]["workers"]["children"]
        host: dict[str, Any] = groups[f"workers_{WORKERS[name]}"]["hosts"][name]
        return host

    def save_inventory(self) -> None:
        self.inventory.write_text("---\n" + json.dumps(self.doc, indent=2) + "\n")

    def failed_rollout(self) -> None:
        """A worker that cannot start stops the roll-out: the ones after it are untouched."""
        order = sorted(WORKERS, key=lambda name: (WORKERS[name], name))
        first, rest = order[0], order[1:]
        before = self.worker_pids()
        versions = {name: self.version(name) for name in rest}
        # update_interval below 0.05 s: the worker refuses to start.
        self.host_vars(first)["worker_settings"] = {"update_interval": 0.01}
        self.save_inventory()
        try:
            recap = self.playbook("rolling-update.yml", should_fail=True)
        finally:
            del self.host_vars(first)["worker_settings"]
            self.save_inventory()
        if recap.get(first, {}).get("failed") != 1:
            raise ScenarioFailed(f"{first} should have failed the roll-out: {recap}")
        after = self.worker_pids()
        touched = [n for n in rest if after[n] != before[n] or self.version(n) != versions[n]]
        if touched:
            raise ScenarioFailed(f"the roll-out went on after {first} failed: {touched} changed")
        log(f"the roll-out stopped at {first}; {rest} untouched (pids {[after[n] for n in rest]})")

    def rolling_update(self) -> None:
        password_file = self.work / "password"
        password_file.write_text(PASSWORD + "\n")
        stop_file = self.work / "clients.stop"
        report_file = self.work / "clients.json"
        before = self.worker_pids()
        old_version = self.version(MASTER)
        self.clients = subprocess.Popen(
            [
                str(self.root(MASTER) / "venv" / "bin" / "python"),
                str(TESTS_DIR / "clients.py"),
                "--master",
                self.master_address(),
                "--ca",
                str(self.root(MASTER) / "state" / "pki" / "ca.pem"),
                "--user",
                USER,
                "--password-file",
                str(password_file),
                "--clients",
                "6",
                "--stop-file",
                str(stop_file),
                "--report",
                str(report_file),
            ],
            env=self.env,
        )
        time.sleep(3)  # the clients log in and settle on their workers
        if self.clients.poll() is not None:
            raise ScenarioFailed(f"the clients exited early ({self.clients.returncode})")
        self.playbook("rolling-update.yml")
        time.sleep(2)
        stop_file.touch()
        try:
            self.clients.wait(timeout=90)
        finally:
            if self.clients.poll() is None:
                self.clients.kill()
        self.clients = None
        report = json.loads(report_file.read_text())
        summary = {
            k: report[k]
            for k in ("seconds", "ok", "retried", "failovers", "failed_for_good", "unfinished")
        }
        log(f"clients during the rolling update: {summary}")
        for client in report["clients"]:
            log(
                f"  {client['name']}: ok={client['ok']} failovers={client['failovers']} "
                f"workers={client['workers_used']} errors={client['errors'][:2]}"
            )
        if report["failed_for_good"] or report["unfinished"]:
            raise ScenarioFailed(f"client requests failed for good during the roll-out: {summary}")
        if report["ok"] < 50 or report["failovers"] < 1:
            raise ScenarioFailed(f"the clients did not exercise the roll-out: {summary}")
        after = self.worker_pids()
        same = [name for name in WORKERS if before[name] == after[name]]
        if same:
            raise ScenarioFailed(f"the rolling update did not restart {same}")
        log(f"every worker was restarted: pids {before} -> {after}")
        versions = {name: self.version(name) for name in WORKERS}
        if set(versions.values()) != {NEW_VERSION}:
            raise ScenarioFailed(f"the workers do not all run {NEW_VERSION}: {versions}")
        if self.version(MASTER) != old_version:
            raise ScenarioFailed("the rolling update touched the master")
        log(f"every worker runs {NEW_VERSION}; the master still runs {old_version}")

    def version(self, host: str) -> str:
        """The PaperTrader version installed in a host's virtualenv."""
        python = self.root(host) / "venv" / "bin" / "python"
        result = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('papertrader'))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip()

    def check_metrics(self) -> None:
        """The targets file names every host's /metrics; each /healthz answers ok."""
        targets = json.loads((self.work / "prometheus-targets.json").read_text())
        by_host = {t["labels"]["papertrader_host"]: t["targets"][0] for t in targets}
        if set(by_host) != {*MASTERS, *WORKERS}:
            raise ScenarioFailed(f"the Prometheus targets file lists {sorted(by_host)}")
        for name, address in by_host.items():
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as answer:
                health = json.loads(answer.read())
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
                scraped = answer.read().decode()
            if health.get("status") != "ok" or "papertrader_build_info" not in scraped:
                raise ScenarioFailed(f"{name} at {address}: health {health}")
        log(f"metrics and health answer on every host: {by_host}")

    # the whole thing --------------------------------------------------------------
    def build_wheel(self) -> None:
        """Build the wheel once per version, as the roles would, and give it to every
        playbook (papertrader_wheel): each run would otherwise build it again."""
        started = time.monotonic()
        result = subprocess.run(
            ["bash", str(ANSIBLE_DIR / "roles" / "papertrader" / "files" / "build-wheel.sh"),
             sys.executable, str(self.work / "src"), str(self.work / "build")],
            capture_output=True, text=True, env=self.env, timeout=600, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ScenarioFailed(f"build-wheel.sh failed:\n{result.stdout}{result.stderr}")
        built = Path(result.stdout.strip().splitlines()[-1])
        wheel = self.work / "wheels" / built.name  # the next build wipes the build directory
        wheel.parent.mkdir(exist_ok=True)
        shutil.copy2(built, wheel)
        self.doc["all"]["vars"]["papertrader_wheel"] = str(wheel)
        self.save_inventory()
        log(f"built {wheel.name} in {time.monotonic() - started:.0f} s")

    def run(self) -> None:
        self.build_wheel()
        recap = self.playbook("site.yml")
        if set(recap) < {*MASTERS, *WORKERS}:
            raise ScenarioFailed(f"site.yml did not reach every host: {recap}")
        self.check_configs()
        self.check_standby_keys()
        self.check_replication()
        self.wait_active(MASTER)
        self.check_all_listed()
        self.check_metrics()
        self.check_redis_tls()
        self.check_logins()
        # site.yml imports workers.yml: this second run is workers.yml's idempotence check too.
        self.check_idempotent(self.playbook("site.yml"), "site.yml")
        set_version(self.work / "src" / "pyproject.toml", NEW_VERSION)
        self.build_wheel()
        self.failed_rollout()
        self.rolling_update()
        self.check_all_listed()
        self.client("us-1", "--json", "quote", "MSFT")
        self.master_failover()
        self.check_replication()
        self.redis_failover()
        # site.yml after the failover: the killed node comes back as the new primary's
        # replica (pt services redis-follow), not as a second primary. Limited to the
        # hosts of Redis, PostgreSQL and their replicas (the workers' part is checked above).
        self.playbook("site.yml", "--limit", f"{MASTER},{REPLICA_HOST}")
        self.check_replication(failed_over=True)
        log("timings: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.timings))

    # clean-up ---------------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop everything started under the work directory, whatever state it is in."""
        if self.clients is not None and self.clients.poll() is None:
            self.clients.kill()
            self.clients.wait()
        hosts = self.work / "hosts"
        for script in sorted(hosts.glob("*/bin/papertrader-*")):
            quiet([str(script), "stop"], self.env)
        master_python = self.root(MASTER) / "venv" / "bin" / "python"
        # The Sentinels first (they would fail over meanwhile), then the replicas, then the
        # primaries.
        sentinels = [str(p.parent) for p in hosts.glob("*/state/services/sentinel.json")]
        if master_python.exists() and sentinels:
            quiet(
                [
                    str(master_python),
                    "-c",
                    "import sys; from pathlib import Path; "
                    "from papertrader.services.host_replicas import load_sentinel; "
                    "from papertrader.services.redis_sentinel import stop_sentinel; "
                    "[stop_sentinel(load_sentinel(Path(d))) for d in sys.argv[1:]]",
                    *sentinels,
                ],
                self.env,
            )
        services = [self.root(name) / "state" / "services" for name in (REPLICA_HOST, MASTER)]
        for directory in services:
            if master_python.exists() and (directory / "services.json").exists():
                quiet(
                    [
                        str(master_python),
                        "-c",
                        "import sys; from papertrader.services import destroy_services; "
                        "destroy_services(sys.argv[1])",
                        str(directory),
                    ],
                    self.env,
                )
        for home in {p.parent for p in hosts.glob("**/pubring.kbx")}:
            quiet(["gpgconf", "--homedir", str(home), "--kill", "all"], self.env)
        kill_leftovers(self.work)


def snapshot_sources(target: Path) -> None:
    """Copy the project's sources: edits made in the tree meanwhile do not reach the run."""
    project = ANSIBLE_DIR.parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    target.mkdir(parents=True)
    for name in SOURCES:
        source = project / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def set_version(pyproject: Path, version: str) -> None:
    """A new release of the same code: what the rolling update rolls out."""
    text = pyproject.read_text()
    new = re.sub(r'(?m)^version = "[^"]*"$', f'version = "{version}"', text, count=1)
    if new == text:
        raise ScenarioFailed(f"no version line in {pyproject}")
    pyproject.write_text(new)


def quiet(cmd: Sequence[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=90)
        if result.returncode != 0:
            log(
                f"cleanup: {' '.join(cmd)} exited {result.returncode}: "
                f"{result.stderr.strip()[-300:]}"
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"cleanup: {' '.join(cmd)}: {exc}")


def kill_leftovers(work: Path) -> None:
    """Last resort: any process whose command line or environment names ``work`` is ours."""
    marker = str(work).encode()
    mine = {os.getpid(), os.getppid()}
    victims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in seen:
            victims.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if victims and sig == signal.SIGTERM:
            time.sleep(3)
    if victims:
        log(f"cleanup: signalled leftover processes {victims}")


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok, changed, unreachable, failed}} (the last recap wins)."""
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            recap = {}
            continue
        match = RECAP_RE.match(line) if in_recap else None
        if match:
            recap[match["host"]] = {
                k: int(match[k]) for k in ("ok", "changed", "unreachable", "failed")
            }
    return recap


def workers_of(document: Any) -> list[dict[str, Any]]:
    """The list of worker records in `pt workers list --json` (a list, or {"workers": [...]})."""
    if isinstance(document, dict):
        document = document.get("workers", [])
    return list(document)


def main(argv: list[str]) -> int:
    if argv[:1] == ["inventory"]:
        directory = Path(argv[1])
        directory.mkdir(parents=True, exist_ok=True)
        print(write_inventory(directory.resolve()))
        return 0
    # Short path: gpg's socket paths must stay under ~100 characters.
    work = Path(tempfile.mkdtemp(prefix="pt-ans-", dir="/tmp"))
    scenario = Scenario(work)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    try:
        scenario.run()
        log(f"PASSED in {time.monotonic() - started:.0f} s")
        return 0
    except ScenarioFailed as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc})")
        return 130
    finally:
        log("cleaning up")
        scenario.cleanup()
        if os.environ.get("PT_ANSIBLE_KEEP"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A Redis Cluster and a Sentinel-managed primary of the tests' own, on loopback ports.

:class:`LocalCluster` is three primaries (``redis-server --cluster-enabled yes``) joined by
``redis-cli --cluster create``; :class:`LocalSentinel` is a primary, its replica and one
Sentinel watching them. Each is started and stopped by the fixture or test that needs it.
Debian bookworm ships no Valkey, so both run on Debian's Redis.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.redis.server import HOST, RedisServer, auth_of, require_redis, scheme_of, wait_until

if TYPE_CHECKING:
    from tests.redis.tls import TlsFiles

__all__ = ["LocalCluster", "LocalSentinel", "cluster", "sentinel", "shared_sentinel"]

SERVICE = "wsgate"
"""The name Sentinel knows the primary by."""


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free too, both below Linux's
    ephemeral range."""
    for _ in range(100):
        port = random.randint(20000, 22700)
        with socket.socket() as first, socket.socket() as bus:
            try:
                first.bind((HOST, port))
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports between 20000 and 32700")


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:  # Debian's redis-server depends on redis-tools, which has it
        pytest.fail("redis-server is installed without redis-cli (apt-get install redis-tools)")
    return binary


class LocalCluster:
    """Three Redis Cluster primaries, no replicas, with a 2 s node timeout.

    A node stopped or killed comes back from :meth:`RedisServer.start` on its port with its
    ``nodes.conf``: the same slots, and no data.

    Args:
        directory: Where each node's directory goes.
        password: The password of every node; none by default.
        tls: The certificates every node serves TLS with, on the cluster bus too; plain TCP
            by default.
    """

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        require_redis()
        self.password = password
        self.tls = tls
        self.nodes = []
        for n in range(3):
            home = directory / f"node{n}"
            home.mkdir()
            options = {
                "cluster-enabled": "yes",
                "cluster-config-file": str(home / "nodes.conf"),
                "cluster-node-timeout": "2000",
            }
            node = RedisServer(
                home, options=options, port=_cluster_port(), password=password, tls=tls
            )
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,...``; with a password and TLS,
        ``rediss+cluster://:<password>@host:port,...?ssl_ca_certs=...``."""
        locations = ",".join(f"{HOST}:{node.port}" for node in self.nodes)
        query = self.tls.query if self.tls is not None else ""
        return f"{scheme_of(self.tls, 'cluster')}://{auth_of(self.password)}{locations}{query}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        secure = self.tls.cli_options() if self.tls is not None else []
        # REDISCLI_AUTH rather than -a: no warning about a password on the command line.
        env = dict(os.environ, REDISCLI_AUTH=self.password or "")
        subprocess.run(
            [
                _redis_cli(),
                *secure,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
            env=env if self.password is not None else None,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node says the cluster is up and serves every slot."""

        def ok() -> bool:
            return all(_state(node) == "ok" for node in self.nodes)

        wait_until(ok, timeout=timeout, what="cluster_state:ok on every node")

    def node_of(self, key: str) -> RedisServer:
        """The primary that serves ``key``."""
        slot: Any = self.nodes[0].command("CLUSTER", "KEYSLOT", key)
        ranges: Any = self.nodes[0].command("CLUSTER", "SLOTS")
        for start, end, primary, *_ in ranges:  # [first, last, [host, port, id], replicas...]
            if int(start) <= int(slot) <= int(end):
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _state(node: RedisServer) -> str:
    try:
        info: Any = node.command("CLUSTER", "INFO")
    except Exception:  # a node that does not answer yet is not ok
        return "down"
    lines = info.decode().splitlines() if isinstance(info, bytes) else []
    return dict(line.partition(":")[::2] for line in lines).get("cluster_state", "")


class LocalSentinel:
    """A primary, a replica of it, and one Sentinel (quorum 1) that fails over in about a
    second.

    Args:
        directory: Where each server's directory goes.
        password: The password of the primary, the replica and the Sentinel (wsgate gives
            the Sentinels the URL's password too); none by default.
        tls: The certificates all three serve TLS with, and speak it to each other with;
            plain TCP by default.
    """

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        require_redis()
        self.directory = directory
        self.password = password
        self.tls = tls
        self.primary = RedisServer(directory / "primary", password=password, tls=tls)
        self.replica = RedisServer(directory / "replica", password=password, tls=tls)
        self.sentinel = RedisServer(
            directory / "sentinel",
            config=directory / "sentinel" / "sentinel.conf",
            sentinel=True,
            password=password,
            tls=tls,
        )
        for server in (self.primary, self.replica, self.sentinel):
            server.directory.mkdir()

    @property
    def url(self) -> str:
        """``redis+sentinel://host:port/wsgate``; with a password and TLS,
        ``rediss+sentinel://:<password>@host:port/wsgate?ssl_ca_certs=...``."""
        query = self.tls.query if self.tls is not None else ""
        return (
            f"{scheme_of(self.tls, 'sentinel')}://{auth_of(self.password)}"
            f"{HOST}:{self.sentinel.port}/{SERVICE}{query}"
        )

    def start(self) -> None:
        self.primary.start()
        self.replica.options["replicaof"] = f"{HOST} {self.primary.port}"
        self.replica.start()
        assert self.sentinel.config is not None
        auth = ""
        if self.password is not None:  # quoted: a password may hold any character
            auth = f"sentinel auth-pass {SERVICE} {json.dumps(self.password)}\n"
        self.sentinel.config.write_text(
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {SERVICE} {HOST} {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n" + auth
        )
        self.sentinel.start()

        def replica_known() -> bool:
            replicas: Any = self.sentinel.command("SENTINEL", "REPLICAS", SERVICE)
            return any(
                int(replica[b"port"]) == self.replica.port
                and replica.get(b"master-link-status") == b"ok"
                for replica in replicas
            )

        wait_until(replica_known, timeout=30, what="Sentinel knows the replica")

    def primary_port(self) -> int:
        address: Any = self.sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(address[1])

    def failover(self) -> None:
        """Promote the replica, and wait until Sentinel names it and it takes writes."""
        self.sentinel.command("SENTINEL", "FAILOVER", SERVICE)

        def promoted() -> bool:
            role: Any = self.replica.command("ROLE")
            return self.primary_port() == self.replica.port and role[0] == b"master"

        wait_until(promoted, timeout=30, what="the replica promoted")
        self.primary, self.replica = self.replica, self.primary

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster shared by the tests that leave it running; each flushes it first."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def shared_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A Sentinel-managed primary shared by the tests that never fail it over."""
    local = LocalSentinel(tmp_path_factory.mktemp("sentinel"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    """A Sentinel-managed primary for one test, which may fail it over."""
    local = LocalSentinel(tmp_path)
    try:
        local.start()
        yield local
    finally:
        local.stop()

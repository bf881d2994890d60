"""The backend contract, run against every backend, and the factory that chooses one.

A new backend joins by adding one entry to ``BACKENDS``; the contract tests then run
against it. Redis runs on real servers of the tests' own: one redis-server
(``tests/redis/server.py``), a three-primary Redis Cluster and a Sentinel-managed primary
(``tests/redis/cluster.py``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import limits
import pytest
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import Receive, Scope, Send

import wsgate.backends
import wsgate.backends.redis
from tests.redis.cluster import LocalCluster, LocalSentinel
from tests.redis.server import RedisServer, eventually
from wsgate import ConfigurationError
from wsgate._window import LocalStorage
from wsgate.backends import (
    SCHEMES,
    Backend,
    MemoryBackend,
    backend_from_uri,
    backend_kind,
    rate_storage,
)
from wsgate.middleware import ratelimit
from wsgate.registry import Admission, MemoryRegistry, Registry

pytestmark = pytest.mark.anyio

KEY = "wsgate:conn:user:alice"
RATE = limits.parse("2/minute")
INVALID = (
    "storage must be 'memory://' or a Redis URL such as 'redis://localhost:6379/0', "
    "'rediss://...', 'unix:///path/redis.sock', 'redis+cluster://host:port,host:port' or "
    "'redis+sentinel://host:port,host:port/service', not {}."
)

Make = Callable[[], Backend]


def memory_uri(request: pytest.FixtureRequest) -> str:
    return "memory://"


def redis_uri(request: pytest.FixtureRequest) -> str:
    """A real redis-server of the tests' own, emptied first."""
    server: RedisServer = request.getfixturevalue("redis_server")
    server.command("FLUSHALL")
    return server.url


def tls_redis_uri(request: pytest.FixtureRequest) -> str:
    """A real redis-server that serves TLS only, to clients with the password and a
    certificate of the test's CA (``tests/redis/tls.py``), emptied first."""
    server: RedisServer = request.getfixturevalue("tls_redis")
    server.command("FLUSHALL")
    return server.url


def cluster_uri(request: pytest.FixtureRequest) -> str:
    """A real three-primary Redis Cluster of the tests' own, emptied first."""
    cluster: LocalCluster = request.getfixturevalue("cluster")
    cluster.flush()
    return cluster.url


def sentinel_uri(request: pytest.FixtureRequest) -> str:
    """A real primary, its replica and a Sentinel, the primary emptied first."""
    sentinel: LocalSentinel = request.getfixturevalue("shared_sentinel")
    sentinel.primary.command("FLUSHALL")
    return sentinel.url


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "memory": memory_uri,
    "redis": redis_uri,
    "redis-tls": tls_redis_uri,
    "cluster": cluster_uri,
    "sentinel": sentinel_uri,
}


@pytest.fixture(params=sorted(BACKENDS))
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Builds backends on one URI, as the worker processes of one deployment would; each
    gets its own registry owner. All are closed at the end."""
    uri = BACKENDS[request.param](request)
    built: list[Backend] = []

    def build() -> Backend:
        built.append(backend_from_uri(uri, registry_ttl=3.0))
        return built[-1]

    try:
        yield build
    finally:
        for backend in built:
            await backend.aclose()


@pytest.fixture
def backend(make: Make) -> Backend:
    return make()


async def hit(storage: Storage | LocalStorage, key: str) -> bool:
    """One hit of a ``RATE`` budget in ``storage``, as the rate-limit middleware counts it."""
    if isinstance(storage, LocalStorage):
        return storage.window("moving-window", RATE.amount, RATE.get_expiry()).hit(key)
    return await MovingWindowRateLimiter(storage).hit(RATE, key)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")


class Evictions:
    """An eviction handler that records what it was handed."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.arrived = anyio.Event()

    def __call__(self, connection_id: str) -> bool:
        self.ids.append(connection_id)
        self.arrived.set()
        return True


# The contract


async def test_it_declares_what_it_is(backend: Backend) -> None:
    expected: dict[str, tuple[bool, type[Registry], type[Any]]] = {
        "memory": (False, MemoryRegistry, LocalStorage),
        "redis": (True, wsgate.backends.redis.RedisRegistry, RedisStorage),
    }
    shared, registry, storage = expected[backend.kind]
    assert backend.shared is shared
    assert type(backend.registry) is registry
    assert isinstance(backend.rate_storage, storage)
    # What the middleware takes as it stands: in-process windows unless shared.
    middleware = ratelimit.RateLimitMiddleware(app, storage=backend.rate_storage)
    assert (middleware.local is not None) is (not shared)


async def test_the_registry_and_the_budgets_work(backend: Backend) -> None:
    assert await backend.registry.add(KEY, "c1", limit=1, policy="evict_oldest") == (
        Admission(True)
    )
    assert await backend.registry.count(KEY) == 1
    assert [await hit(backend.rate_storage, "alice") for _ in range(3)] == [True, True, False]


async def test_backends_on_one_uri_share_state_exactly_when_shared(make: Make) -> None:
    a, b = make(), make()
    await a.registry.add(KEY, "c1", limit=5, policy="evict_oldest")
    assert await b.registry.count(KEY) == (1 if a.shared else 0)
    assert await hit(a.rate_storage, "alice")
    assert await hit(a.rate_storage, "alice")
    assert await hit(b.rate_storage, "alice") is (not a.shared)


async def test_evictions_reach_the_handler_exactly_when_shared(make: Make) -> None:
    a, b = make(), make()
    evictions = Evictions()
    assert a.on_eviction(evictions) is None  # type: ignore[func-returns-value]
    await a.registry.add(KEY, "c1", limit=1, policy="evict_oldest")
    admission = await b.registry.add(KEY, "c2", limit=1, policy="evict_oldest")
    if not a.shared:
        assert admission == Admission(True)  # b never saw c1
        assert evictions.ids == []
        return
    assert admission == Admission(True, (f"{a.registry.owner}/c1",))
    # Told over pub/sub, or found by the next refresh (every registry_ttl / 3 s) at the latest.
    with anyio.fail_after(10):
        await evictions.arrived.wait()
    assert evictions.ids == ["c1"]


async def test_health_while_it_answers(backend: Backend) -> None:
    health = await backend.health()
    assert health["kind"] == backend.kind
    assert health["status"] == "ok"
    assert isinstance(health["latency_ms"], float)


async def test_aclose_gives_the_slots_back_and_may_be_repeated(make: Make) -> None:
    backend = make()
    observer = make() if backend.shared else backend
    await backend.registry.add(KEY, "c1", limit=1, policy="reject_new")
    await backend.aclose()
    await backend.aclose()
    assert await observer.registry.count(KEY) == 0
    assert (await observer.registry.add(KEY, "c2", limit=1, policy="reject_new")).admitted


# What only one backend does


async def test_memory_health_is_constant() -> None:
    backend = backend_from_uri("memory://")
    assert await backend.health() == {"kind": "memory", "status": "ok", "latency_ms": 0.0}
    await backend.aclose()


async def test_redis_health_follows_the_server(own_redis: RedisServer) -> None:
    backend = backend_from_uri(own_redis.url)
    try:
        assert (await backend.health())["status"] == "ok"
        own_redis.stop()
        assert await backend.health() == {"kind": "redis", "status": "down", "latency_ms": None}
        own_redis.start()

        async def status() -> object:
            return (await backend.health())["status"]

        await eventually(status, "ok")
    finally:
        await backend.aclose()


async def test_redis_registry_and_rate_limits_share_one_pool(redis_server: RedisServer) -> None:
    backend = backend_from_uri(redis_server.url)
    try:
        assert isinstance(backend.registry, wsgate.backends.redis.RedisRegistry)
        assert isinstance(backend.rate_storage, RedisStorage)
        bridge: Any = backend.rate_storage.bridge
        assert bridge.storage.connection_pool is backend.registry.pool
    finally:
        await backend.aclose()


def test_the_registry_contract_ignores_evictions_by_default() -> None:
    assert MemoryRegistry().on_eviction(Evictions()) is None  # type: ignore[func-returns-value]


# The factory


@pytest.mark.parametrize("uri", ["memory://", "async+memory://", "MEMORY://"])
async def test_memory_uris(uri: str) -> None:
    backend = backend_from_uri(uri)
    assert isinstance(backend, MemoryBackend)
    assert backend.kind == backend_kind(uri) == "memory"
    await backend.aclose()


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://127.0.0.1:6380/0",
        "unix:///tmp/redis.sock",
        "async+redis://127.0.0.1:6379/0",
        "async+rediss://127.0.0.1:6380/0",
        "async+unix:///tmp/redis.sock",
        "REDIS://127.0.0.1:6379/0",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        "rediss+cluster://:hunter2@127.0.0.1:7000",
        "async+redis+cluster://127.0.0.1:7000",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/main",
        "rediss+sentinel://:hunter2@127.0.0.1:26379/main",
        "async+redis+sentinel://127.0.0.1:26379/main",
    ],
)
async def test_redis_uris_build_without_connecting(uri: str) -> None:
    backend = backend_from_uri(uri, registry_ttl=4.0, backend_policy="fail_closed")
    try:
        assert isinstance(backend, wsgate.backends.redis.RedisBackend)
        assert backend.kind == backend_kind(uri) == "redis"
        assert backend.registry.ttl == 4.0
        assert backend.registry.policy == "fail_closed"
    finally:
        await backend.aclose()


@pytest.mark.parametrize("mode", ["cluster", "sentinel"])
async def test_tls_and_the_password_reach_every_client(mode: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("read when a connection is made")
    backend = backend_from_uri(
        f"rediss+{mode}://:hunt%40er2@127.0.0.1:7000,127.0.0.1:7001/main"
        f"?ssl_ca_certs={ca}&ssl_check_hostname=false"
    )
    assert isinstance(backend, wsgate.backends.redis.RedisBackend)
    try:
        registry: Any = backend.registry._client
        rates: Any = backend.rate_storage
        if mode == "cluster":
            managers = [registry.nodes_manager, rates.bridge.storage.nodes_manager]
            assert [sorted(manager.startup_nodes) for manager in managers] == [
                ["127.0.0.1:7000", "127.0.0.1:7001"]
            ] * 2
            settings = [
                (manager.connection_kwargs, manager.connection_kwargs["connection_class"])
                for manager in managers
            ]
        else:
            assert registry.connection_pool.service_name == "main"
            sentinels = registry.connection_pool.sentinel_manager.sentinels
            pools = [registry.connection_pool, rates.bridge.storage.connection_pool]
            pools += [sentinel.connection_pool for sentinel in sentinels]
            settings = [(pool.connection_kwargs, pool.connection_class) for pool in pools]
        for kwargs, connection_class in settings:
            assert kwargs["password"] == "hunt@er2"
            assert "SSL" in connection_class.__name__
            assert kwargs["ssl_ca_certs"] == str(ca)
            assert kwargs["ssl_check_hostname"] is False
            assert kwargs["socket_timeout"] == 2.0
    finally:
        await backend.aclose()


def test_every_scheme_is_one_kind() -> None:
    kinds = {scheme: backend_kind(scheme + "x") for scheme in SCHEMES}
    assert kinds == {
        "memory://": "memory",
        "redis://": "redis",
        "rediss://": "redis",
        "unix://": "redis",
        "redis+cluster://": "redis",
        "rediss+cluster://": "redis",
        "redis+sentinel://": "redis",
        "rediss+sentinel://": "redis",
    }
    assert all(backend_kind(f"async+{scheme}x") == kinds[scheme] for scheme in SCHEMES)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgres://admin:hunter2@db:5432/app", "'postgres://admin:***@db:5432/app'"),
        ("redis+valkey://127.0.0.1:26379/main", "'redis+valkey://127.0.0.1:26379/main'"),
        ("memory", "'memory'"),
        ("redis:127.0.0.1", "'redis:127.0.0.1'"),
        ("", "''"),
        (42, "42"),
    ],
)
def test_bad_uris_are_refused_with_what_is_valid(uri: Any, shown: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        backend_from_uri(uri)
    assert str(refused.value) == INVALID.format(shown)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"registry_ttl": 0}, "registry_ttl must be a positive number of seconds, not 0."),
        (
            {"backend_policy": "fail_sideways"},
            "backend_policy must be one of 'fail_open', 'fail_closed', not 'fail_sideways'.",
        ),
    ],
)
@pytest.mark.parametrize("uri", ["memory://", "redis://127.0.0.1:6379/0"])
def test_bad_options_are_refused_by_name(uri: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        backend_from_uri(uri, **options)


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("redis://:hunter2@127.0.0.1:notaport/0", "is not a Redis URL"),
        (
            "redis+cluster://:hunter2@127.0.0.1:7000,127.0.0.1",
            "'127.0.0.1' is not a host:port; write 'redis+cluster://host:port[,host:port...]'",
        ),
        (
            "redis+sentinel://:hunter2@127.0.0.1:26379",
            "it names no service; write 'redis+sentinel://host:port[,...]/service_name'",
        ),
        (
            "rediss+cluster://:hunter2@127.0.0.1:7000?ssl_ca_cert=/ca.pem",
            "'ssl_ca_cert' is not a query parameter wsgate reads on a cluster or Sentinel URL; "
            "it reads ssl_ca_certs, ssl_cert_reqs, ssl_check_hostname, ssl_certfile, ssl_keyfile",
        ),
        (
            "redis+sentinel://:hunter2@127.0.0.1:26379/main?ssl_cert_reqs=none",
            "ssl_cert_reqs set(s) up TLS, which a 'redis+sentinel://' URL does not use; TLS "
            "takes 'rediss://', 'rediss+cluster://' or 'rediss+sentinel://'",
        ),
        (
            "rediss://:hunter2@127.0.0.1:6380/0?ssl_ca_certs=/nowhere/ca.pem",
            "ssl_ca_certs='/nowhere/ca.pem' names no file; give the path of a PEM file",
        ),
        (
            "rediss+cluster://:hunter2@127.0.0.1:7000?ssl_cert_reqs=always",
            "ssl_cert_reqs must be 'required', 'optional' or 'none', not 'always'",
        ),
        (
            "rediss+sentinel://:hunter2@127.0.0.1:26379/main?ssl_check_hostname=maybe",
            "ssl_check_hostname must be 'true' or 'false', not 'maybe'",
        ),
    ],
)
def test_a_redis_url_that_redis_cannot_read_is_refused(uri: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)) as refused:
        backend_from_uri(uri)
    assert "hunter2" not in str(refused.value)


def test_redis_without_its_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python spells "not importable".
    for module in ("redis", "redis.asyncio", "redis.exceptions"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError) as refused:
        backend_from_uri("redis://:hunter2@localhost:6379/0")
    assert str(refused.value) == (
        "storage 'redis://:***@localhost:6379/0' needs the Redis client: "
        "pip install 'wsgate[redis]'."
    )


# The package


def test_importing_the_backends_leaves_redis_unimported() -> None:
    check = (
        "import sys, wsgate.backends, wsgate.backends.redis; "
        "print('redis' in sys.modules, 'redis.asyncio' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("module", [wsgate.backends, wsgate.backends.redis])
def test_all_is_honest(module: ModuleType) -> None:
    names: list[str] = module.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(module, name), name


def test_rate_storage_is_one_function_in_both_places() -> None:
    assert ratelimit.rate_storage is rate_storage


def test_the_lua_scripts_are_package_resources() -> None:
    here = files("wsgate.backends.redis")
    names = sorted(item.name for item in here.iterdir() if item.name.endswith(".lua"))
    assert names == [
        "add.lua",
        "count.lua",
        "now.lua",
        "owner_of.lua",
        "revoke.lua",
        "sync.lua",
        "total.lua",
        "worker.lua",
    ]

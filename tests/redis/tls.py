"""Throwaway TLS material for the Redis tests: a CA of the test's own, a certificate for the
servers (127.0.0.1 and localhost) and one for the clients, written with ``cryptography``.

The servers ask every client for a certificate (``--tls-auth-clients yes``), so a test that
gets through proves that the URL's ``ssl_certfile`` and ``ssl_keyfile`` reached every
connection wsgate opens, as much as ``ssl_ca_certs``.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.redis.cluster import LocalCluster, LocalSentinel
from tests.redis.server import RedisServer, require_redis

__all__ = [
    "PASSWORD",
    "TlsFiles",
    "make_tls_files",
    "require_tls",
    "tls_cluster",
    "tls_files",
    "tls_redis",
    "tls_sentinel",
]


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a test's TLS: ``ca`` signed both certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def query(self) -> str:
        """The query string that gives a storage URL the CA and the client certificate."""
        return (
            f"?ssl_ca_certs={self.ca}&ssl_certfile={self.client_cert}"
            f"&ssl_keyfile={self.client_key}&ssl_cert_reqs=required"
        )

    def server_options(self) -> dict[str, str]:
        """redis-server's options for serving TLS only, clients with a certificate only."""
        return {
            "tls-cert-file": str(self.server_cert),
            "tls-key-file": str(self.server_key),
            "tls-ca-cert-file": str(self.ca),
            "tls-auth-clients": "yes",
        }

    def cli_options(self) -> list[str]:
        """redis-cli's options for the same."""
        return [
            "--tls",
            "--cacert",
            str(self.ca),
            "--cert",
            str(self.client_cert),
            "--key",
            str(self.client_key),
        ]


def require_tls() -> None:
    """Skip the test unless redis-server was built with TLS and ``cryptography`` is
    installed; in CI, fail instead."""
    binary = require_redis()
    missing = []
    if importlib.util.find_spec("cryptography") is None:
        missing.append("the cryptography package (pip install cryptography)")
    # With TLS built in, this is a valid configuration that listens nowhere; without it,
    # tls-port is a bad directive.
    result = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if "not listen anywhere" not in result.stdout + result.stderr:
        missing.append(f"a redis-server built with TLS ({shutil.which('redis-server')} is not)")
    if missing:
        reason = "the Redis TLS tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def make_tls_files(directory: Path) -> TlsFiles:
    """A new CA, and a server and a client certificate it signed, in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(path: Path, certificate: x509.Certificate, key: Any) -> None:
        path.with_suffix(".crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("wsgate test CA"))
        .issuer_name(name("wsgate test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write(directory / "ca", ca, ca_key)

    def issue(stem: str, common: str, usages: list[x509.ObjectIdentifier]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(directory / stem, certificate, key)

    # A server is a client too (cluster bus, replication, Sentinel): its certificate is both.
    issue("server", "127.0.0.1", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    issue("client", "wsgate", [ExtendedKeyUsageOID.CLIENT_AUTH])
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


PASSWORD = "p@ss/w%rd"
"""The password of the TLS servers: characters that a URL must quote, to prove it is
unquoted on the way to every server."""


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a server and a client certificate for the session's TLS servers."""
    require_tls()
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_redis(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """One Redis that serves TLS only, and wants :data:`PASSWORD` and a client certificate."""
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"), password=PASSWORD, tls=tls_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_cluster(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """Three cluster primaries, TLS only (the cluster bus too), with :data:`PASSWORD`."""
    local = LocalCluster(tmp_path_factory.mktemp("tls-cluster"), password=PASSWORD, tls=tls_files)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def tls_sentinel(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSentinel]:
    """A primary, its replica and a Sentinel, all TLS only (replication and Sentinel's own
    connections too), all with :data:`PASSWORD`."""
    local = LocalSentinel(tmp_path_factory.mktemp("tls-sentinel"), password=PASSWORD, tls=tls_files)
    try:
        local.start()
        yield local
    finally:
        local.stop()

"""SecretsFile: HMAC secrets read from a file, and read again when the file changes.

The file holds one secret per line, the newest first; blank lines and lines that start with
``#`` do not count, and whitespace around a secret is dropped. An HMAC secret rotates with no
restart: write the new one at the top, and remove the old line once its tokens have expired.

There is no task and no watcher. The verifier asks for the keys on every token, and at most
once per ``CHECK_INTERVAL`` (1 second, by a monotonic clock) that asks ``os.stat`` whether the
file changed (its inode, size, modification or change time). Only then is it read again. A
file that is missing, unreadable, holds no secret or holds a secret too short changes
nothing: the secrets read before serve on, and one warning on ``wsgate.auth`` says why, once
per change of the file. No log line ever holds a secret.
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsgate.exceptions import ConfigurationError

logger = logging.getLogger("wsgate.auth")

Keys = dict[tuple[str | None, str], Any]
"""(kid, alg) -> python-jose key; kid None is the key for tokens without one."""

CHECK_INTERVAL = 1.0
"""Least time between two looks at the file, in seconds."""
_RACY_SECONDS = 2.0
"""A file modified this recently (in seconds, by the wall clock) is read again at the next
check even if os.stat says nothing changed: a rewrite of the same size within one tick of
the file system's timestamps leaves no other trace."""


class SecretsFile:
    """The keys built from the HMAC secrets in ``path``, kept current as the file changes.

    Args:
        path: The file: one secret per line, the newest first.
        build: Makes the keys from the secrets, the newest first; raises ConfigurationError
            when a secret cannot be used (shorter than the minimum, for one).
        clock: A monotonic clock, in seconds, that spaces the checks of the file.

    Raises ConfigurationError when the file cannot be used at start-up.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        build: Callable[[tuple[bytes, ...]], Keys],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._build = build
        self._clock = clock
        self._seen = self._signature()
        self._secrets, self._keys = self._load()  # at start-up, the error is the caller's
        self._warned: str | None = None
        self._next_check = clock() + CHECK_INTERVAL

    def keys(self) -> Keys:
        """The keys now: the file is looked at first, when the last look is a second old."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL
            self._check()
        return self._keys

    def _check(self) -> None:
        signature = self._signature()
        if signature is not None and signature == self._seen:
            return
        self._seen = signature
        try:
            secrets, keys = self._load()
        except ConfigurationError as exc:
            # Once per change, not once a second; a message names the file, never a secret.
            if str(exc) != self._warned:
                self._warned = str(exc)
                logger.warning(
                    "%s The %d secret(s) read before serve on until the file is fixed.",
                    exc,
                    len(self._secrets),
                )
            return
        self._warned = None
        if secrets != self._secrets:
            logger.info("the secrets file %s changed: %d secret(s) now", self.path, len(secrets))
        self._secrets, self._keys = secrets, keys

    def _signature(self) -> tuple[int, ...] | None:
        """What os.stat says of the file, or its error number; None to read it regardless."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            return (exc.errno or 0,)
        if time.time() - stat.st_mtime < _RACY_SECONDS:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)

    def _load(self) -> tuple[tuple[bytes, ...], Keys]:
        """The secrets in the file and their keys; ConfigurationError saying what to do."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"the secrets file {self.path} cannot be read ({exc.strerror or exc}). Create "
                "it, readable by the gate, with one HMAC secret per line, the newest first, or "
                "name the right file in WSGATE_JWT_SECRETS_FILE (secrets_file=)."
            ) from None
        lines = (line.strip() for line in data.removeprefix(codecs.BOM_UTF8).splitlines())
        secrets = tuple(line for line in lines if line and not line.startswith(b"#"))
        if not secrets:
            raise ConfigurationError(
                f"the secrets file {self.path} holds no secret (blank lines and lines that "
                "start with # do not count). Write the HMAC secret on a line of its own, the "
                "newest first."
            )
        try:
            return secrets, self._build(secrets)
        except ConfigurationError as exc:
            raise ConfigurationError(f"in the secrets file {self.path}, {exc}") from None

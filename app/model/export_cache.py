"""Where exported model parts are kept between loads: next to the artifact (`<artifact>/.runtime-cache/`) when its
folder is writable, else in a cache folder of the service's (FUSION_RUNTIME_CACHE_DIR; models are often mounted
read-only). A file is named by a key over the weights, the part and the versions of everything that made it.

Nothing read back from here is trusted: the caller checks what it builds from it against the model at every load.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ARTIFACT_SUBDIR = ".runtime-cache"
# Longest a load waits for another process exporting the same model (the default model takes 10-15 s of CPU).
LOCK_TIMEOUT_S = 300.0


def default_cache_dir() -> Path:
    """The fallback cache folder when none is configured: one per user under the system's temporary folder."""
    return Path(tempfile.gettempdir()) / f"fusion-serve-runtime-{os.getuid()}"


def cache_key(weights_digest: str, part: str, versions: dict[str, str]) -> str:
    text = "|".join([weights_digest, part, *(f"{k}={v}" for k, v in sorted(versions.items()))])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class ExportCache:
    """Cached files for one artifact: read from the first folder that has one, written to the first that takes it.
    `private` folders (the fallback) are used only while they belong to this user and no one else may write there,
    since anyone who could write there could choose what the service loads."""

    folders: tuple[Path, ...]
    private: tuple[Path, ...] = ()

    @classmethod
    def for_artifact(cls, artifact_dir: Path, fallback: Path | None) -> ExportCache:
        fallback = fallback or default_cache_dir()
        return cls(folders=(artifact_dir / ARTIFACT_SUBDIR, fallback), private=(fallback,))

    def read(self, name: str) -> tuple[bytes, Path] | None:
        for folder in self.folders:
            path = folder / name
            if path.is_file() and self._usable(folder):
                try:
                    return path.read_bytes(), path
                except OSError as exc:
                    log.debug("cannot read %s: %s", path, exc)
        return None

    def write(self, name: str, data: bytes) -> Path | None:
        """Write atomically (a reader never sees half a file); None where no folder takes it."""
        for folder in self.folders:
            try:
                if not self._ready(folder):
                    continue
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.chmod(tmp, 0o600 if folder in self.private else 0o644)
                    os.replace(tmp, folder / name)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                return folder / name
            except OSError as exc:  # read-only mount, permissions, full disk: try the next folder
                log.debug("cannot cache %s in %s: %s", name, folder, exc)
        return None

    @contextmanager
    def locked(self, name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the lock `name` in the first folder that takes a file: processes loading the same model at once
        (replicas, workers) export it once; the others wait here, then find the exports cached. Without a folder
        to lock in, or after `timeout_s`, go on unlocked (at worst, the work is done twice)."""
        fd = None
        for folder in self.folders:
            try:
                if self._ready(folder):
                    fd = os.open(folder / f".lock-{name}", os.O_RDWR | os.O_CREAT, 0o600)
                    break
            except OSError as exc:
                log.debug("no lock in %s: %s", folder, exc)
        if fd is not None:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        log.warning("another process has held the runtime cache lock %s for %.0f s; going on", name,
                                    timeout_s)
                        break
                    time.sleep(0.2)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _ready(self, folder: Path) -> bool:
        """Create `folder` if needed; whether files may go there."""
        folder.mkdir(mode=0o700 if folder in self.private else 0o755, parents=True, exist_ok=True)
        return self._usable(folder)

    def _usable(self, folder: Path) -> bool:
        if folder not in self.private:
            return True
        try:
            st = folder.stat()
        except OSError:
            return False
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            log.warning("not using the runtime cache %s: it must belong to this user and be writable by no one else",
                        folder)
            return False
        return True

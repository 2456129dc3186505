"""`python -m app.probe /readyz`: exit 0 if this host's service answers 200 on the path, else 1.

The container health checks use it (the slim image has no curl); host and port come from the `FUSION_*` settings.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.config import Settings, get_settings

_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def probe_url(settings: Settings, path: str) -> str:
    host = _ANY_ADDRESS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/{path.lstrip('/')}"


def probe(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a fixed http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    url = probe_url(get_settings(), path)
    if probe(url):
        return 0
    print(f"probe failed: {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

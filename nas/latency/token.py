"""The shared secret of a latency server and its clients: from ``--token-file`` or the
``POSENAS_LATENCY_TOKEN`` environment variable, on both ends; sent as ``Authorization: Bearer``."""
from __future__ import annotations

import ipaddress
import os
import string
from pathlib import Path

from nas.errors import PoseNASError

TOKEN_ENV = "POSENAS_LATENCY_TOKEN"
MIN_CHARS = 16  # a guessable token protects nothing
ALLOWED = set(string.ascii_letters + string.digits + "-._~+/=")  # what a header carries unquoted


def read_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The token of ``token_file``, else of the environment, else None (no authentication)."""
    if token_file is not None:
        source = str(token_file)
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise PoseNASError(f"{source}: token file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise PoseNASError(f"{source}: token file not readable ({type(e).__name__})") from None
    else:
        source, token = TOKEN_ENV, os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_CHARS or not set(token) <= ALLOWED:
        raise PoseNASError(f"{source}: a latency token is at least {MIN_CHARS} characters of letters, digits and "
                           f"-._~+/= (for instance: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def check_exposure(host: str, token: str | None) -> None:
    """A server off loopback without a token would measure for anyone who reaches its port."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if token is None and not loopback:
        raise PoseNASError(f"--host {host} without a token: anyone who reaches the port could use this device; "
                           f"set {TOKEN_ENV} or give --token-file (loopback needs none)")

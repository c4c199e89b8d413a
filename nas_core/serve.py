"""Serve the dashboard: ``streamlit run app.py`` as a child process, optionally behind an ngrok tunnel with basic auth.

There is deliberately no way to open a public tunnel without authentication: :func:`open_tunnel`
always passes ``auth="user:password"`` to pyngrok (which ngrok enforces as HTTP basic auth), a
missing password is generated, and the tunnel is checked to answer 401 without credentials.
The ngrok token and the password are never logged, never put in the child's environment and never
reach MLflow; a generated password is printed once, on the console that asked for it.

Example::

    python -m nas_core serve --tunnel            # token from $NGROK_AUTHTOKEN, password generated
    python -m nas_core serve --port 8600 --workspace /content/drive/MyDrive/moca_runs
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nas_core.errors import TunnelError

__all__ = ["TOKEN_HELP", "Tunnel", "Served", "tunnel_options", "open_tunnel", "check_auth", "start_server", "wait_for_server", "start", "serve"]

TOKEN_HELP = "https://dashboard.ngrok.com/get-started/your-authtoken"


def _app_path() -> Path:
    """The dashboard entry: a checkout's app.py next to nas_core/, else the copy an installed package ships."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "app.py"
    if checkout.is_file() and (here.parent / "app_pages").is_dir():
        return checkout
    return here / "_app" / "app.py"


APP_PATH = _app_path()
MIN_PASSWORD = 8  # ngrok refuses shorter basic-auth passwords
_SECRET_ENV = ("NGROK_AUTHTOKEN", "NGROK_API_KEY", "MOCA_TUNNEL_PASSWORD")

log = logging.getLogger(__name__)


@dataclass
class Tunnel:
    """An open tunnel: its public URL and how to close it."""

    public_url: str
    close: Callable[[], None]
    user: str


def tunnel_options(*, user: str, password: str) -> dict[str, Any]:
    """The pyngrok ``connect`` options for an HTTP tunnel guarded by basic auth (validated)."""
    if not user or ":" in user:
        raise TunnelError(f"tunnel user name {user!r} is not allowed; use a non-empty name without ':' (e.g. --user moca).")
    if not password or len(password) < MIN_PASSWORD or len(password) > 128:
        raise TunnelError(f"the tunnel password must be {MIN_PASSWORD}-128 characters (ngrok's rule); pass a longer --password "
                          "or leave it out to get a generated one.")
    return {"proto": "http", "auth": f"{user}:{password}"}


def _pyngrok_connect(port: int, *, token: str, options: dict[str, Any]) -> Tunnel:
    try:
        from pyngrok import conf, ngrok
        from pyngrok.exception import PyngrokError
    except ImportError:
        raise TunnelError("the tunnel needs pyngrok: pip install pyngrok (the local dashboard still works without it).") from None
    # pyngrok logs the tunnel options (basic-auth credentials included) at DEBUG: keep its loggers above that.
    for name in ("pyngrok", "pyngrok.ngrok", "pyngrok.process"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # config_version "2" uses the agent's /api/tunnels, whose `basic_auth` (pyngrok's `auth`) ngrok enforces.
    try:
        config = conf.PyngrokConfig(auth_token=token, config_version="2", monitor_thread=False)
    except TypeError:  # pyngrok < 8.1 has no config_version and always uses the tunnels API
        config = conf.PyngrokConfig(auth_token=token, monitor_thread=False)
    try:
        tunnel = ngrok.connect(str(port), pyngrok_config=config, **options)
    except PyngrokError as exc:
        text = str(exc).replace(token, "***")
        first = text.splitlines()[0] if text else type(exc).__name__
        if "install" in type(exc).__name__.lower() or "download" in text.lower():
            raise TunnelError(f"the ngrok agent could not be downloaded ({first}); check the internet connection, or install ngrok "
                              "and set PYNGROK_NGROK_PATH.") from None
        if "authtoken" in text.lower() or "authentication" in text.lower() or "ERR_NGROK_1" in text:
            raise TunnelError(f"ngrok refused the authtoken ({first}); copy a fresh one from {TOKEN_HELP}.") from None
        raise TunnelError(f"ngrok could not open the tunnel ({first}); check the internet connection and {TOKEN_HELP}.") from None
    except OSError as exc:
        raise TunnelError(f"ngrok could not be reached ({type(exc).__name__}: {exc}); check the internet connection.") from None
    url = tunnel.public_url or ""
    if url.startswith("http://"):
        url = "https://" + url[len("http://"):]

    def close() -> None:
        try:
            if tunnel.public_url:
                ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
            ngrok.kill(pyngrok_config=config)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass

    return Tunnel(public_url=url, close=close, user=options["auth"].split(":", 1)[0])


def check_auth(url: str, *, timeout: float = 10.0) -> bool | None:
    """True when ``url`` answers 401 without credentials, False when it lets us in, None when unreachable."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:  # noqa: S310 - our own URL
            return resp.status == 401
    except urllib.error.HTTPError as exc:
        return exc.code == 401 or None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def open_tunnel(port: int, *, token: str | None, user: str = "moca", password: str, connect: Callable[..., Tunnel] | None = None,
                verify: Callable[[str], bool | None] | None = check_auth) -> Tunnel:
    """Open an ngrok tunnel to ``port`` protected by basic auth; refuse to leave an unprotected one open.

    ``connect(port, token=..., options=...)`` is pyngrok by default; tests pass a local fake.
    """
    if not token:
        raise TunnelError(f"--tunnel needs an ngrok authtoken: pass --ngrok-token or set NGROK_AUTHTOKEN (get one at {TOKEN_HELP}).")
    options = tunnel_options(user=user, password=password)
    tunnel = (connect or _pyngrok_connect)(port, token=token, options=options)
    if verify is not None:
        protected = verify(tunnel.public_url)
        if protected is False:
            tunnel.close()
            raise TunnelError("the tunnel answered without asking for a password, so it was closed again; "
                              "update pyngrok/ngrok (pip install -U pyngrok) and retry.")
    return tunnel


def _free_port(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _child_env(workspace: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    env["MOCA_HOME"] = str(Path(workspace).resolve())
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def start_server(*, port: int, host: str = "127.0.0.1", workspace: str | Path, app: str | Path = APP_PATH,
                 stdout: Any = None) -> subprocess.Popen[bytes]:
    """Start ``streamlit run app.py`` headless on ``host:port`` with ``MOCA_HOME=workspace`` (its own process group)."""
    app = Path(app)
    if not app.is_file():
        raise TunnelError(f"dashboard entry point {app} is missing; run from a MoCA-NAS checkout (app.py next to nas_core/) or reinstall the package (`pip install moca-nas` ships it).")
    if not _free_port(host, port):
        raise TunnelError(f"port {port} on {host} is already in use; pass another --port (e.g. --port {port + 1}).")
    Path(workspace).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true", "--server.port", str(port),
           "--server.address", host, "--browser.gatherUsageStats", "false"]
    return subprocess.Popen(cmd, env=_child_env(workspace), cwd=str(app.parent), stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                            start_new_session=True)


def wait_for_server(url: str, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers; a dead child or the timeout is a :class:`TunnelError`."""
    deadline = time.monotonic() + timeout
    health = url.rstrip("/") + "/_stcore/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TunnelError(f"the dashboard server exited with code {proc.returncode} before it was ready; run "
                              "`streamlit run app.py` to see why.")
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:  # noqa: S310 - local URL
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TunnelError(f"the dashboard did not answer at {url} within {timeout:.0f} s; is the port blocked?")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode or 0


@dataclass
class Served:
    """A running dashboard (and its tunnel, if one opened): ``stop()`` closes both."""

    proc: subprocess.Popen[bytes]
    local_url: str
    tunnel: Tunnel | None = None
    tunnel_error: str | None = None

    def stop(self) -> int:
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        return _stop(self.proc)


def start(*, port: int = 8501, host: str = "127.0.0.1", workspace: str | Path, tunnel: bool = False, password: str | None = None,
          user: str = "moca", token: str | None = None, app: str | Path = APP_PATH, connect: Callable[..., Tunnel] | None = None,
          out: TextIO | None = None) -> Served:
    """Start the dashboard and, with ``tunnel=True``, an authenticated ngrok tunnel; returns once both are up.

    Problems before anything started (no token, bad password, busy port) raise :class:`TunnelError`.
    A tunnel that cannot open once the server is up is reported on ``out`` and the local server keeps running.
    """
    out = out or sys.stdout
    generated = False
    if tunnel:
        if not token:
            raise TunnelError(f"--tunnel needs an ngrok authtoken: pass --ngrok-token or set NGROK_AUTHTOKEN (get one at {TOKEN_HELP}).")
        if password is None:  # the environment keeps it off the command line (visible in `ps`)
            password = os.environ.get("MOCA_TUNNEL_PASSWORD") or None
        generated = password is None
        password = password if password is not None else secrets.token_urlsafe(12)
        tunnel_options(user=user, password=password)  # validate before starting anything
    proc = start_server(port=port, host=host, workspace=workspace, app=app)
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    served = Served(proc=proc, local_url=local)
    try:
        wait_for_server(local, proc=proc)
    except BaseException:
        _stop(proc)
        raise
    print(f"MoCA-NAS dashboard: {local}  (workspace {Path(workspace).resolve()})", file=out, flush=True)
    if tunnel:
        try:
            served.tunnel = open_tunnel(port, token=token, user=user, password=password or "", connect=connect)
        except TunnelError as exc:
            served.tunnel_error = str(exc)
            print(f"error: {exc} The dashboard is still running locally at {local}.", file=out, flush=True)
        else:
            print(f"Public URL: {served.tunnel.public_url}  (basic auth user {user!r})", file=out, flush=True)
            if generated:
                print(f"Generated password (shown once): {password}", file=out, flush=True)
    return served


def serve(*, port: int = 8501, host: str = "127.0.0.1", workspace: str | Path, tunnel: bool = False, password: str | None = None,
          user: str = "moca", token: str | None = None, app: str | Path = APP_PATH, connect: Callable[..., Tunnel] | None = None,
          out: TextIO | None = None) -> int:
    """:func:`start`, then block until the server exits or Ctrl+C; returns an exit code for the CLI."""
    served = start(port=port, host=host, workspace=workspace, tunnel=tunnel, password=password, user=user, token=token, app=app,
                   connect=connect, out=out)
    try:
        return served.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        served.stop()

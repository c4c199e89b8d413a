"""nas_core.tunnel: the tunnel always carries basic auth, secrets stay out of logs, failures leave the local server usable.

The network call (pyngrok) is replaced by local fakes: an HTTP server on 127.0.0.1 that enforces the
credentials it was given stands in for the ngrok edge.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nas_core import tunnel as tn
from nas_core.cli import main as cli_main
from nas_core.errors import TunnelError

TOKEN = "tok_SECRET_1234567890"


class FakeEdge:
    """A local stand-in for an ngrok endpoint: 401 without the basic-auth credentials it was opened with."""

    def __init__(self, credentials: str | None) -> None:
        expected = "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if expected is not None and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="moca"')
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"dashboard")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.server.shutdown()
            self.server.server_close()
            self.closed = True


class FakeConnect:
    """Replaces the pyngrok call: records what it was asked for and opens a :class:`FakeEdge`."""

    def __init__(self, *, enforce: bool = True) -> None:
        self.calls: list[dict[str, Any]] = []
        self.edges: list[FakeEdge] = []
        self.enforce = enforce

    def __call__(self, port: int, *, token: str, options: dict[str, Any]) -> tn.Tunnel:
        self.calls.append({"port": port, "token": token, "options": dict(options)})
        edge = FakeEdge(options.get("auth") if self.enforce else None)
        self.edges.append(edge)
        return tn.Tunnel(public_url=edge.url, close=edge.close, user=options["auth"].split(":")[0])


@pytest.fixture
def fake() -> Iterator[FakeConnect]:
    f = FakeConnect()
    yield f
    for edge in f.edges:
        edge.close()


def _get(url: str, credentials: str | None = None) -> int:
    req = urllib.request.Request(url)
    if credentials:
        req.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- options and validation -----------------------------------------------------------------------


def test_options_always_carry_basic_auth() -> None:
    assert tn.tunnel_options(user="moca", password="correct-horse") == {"proto": "http", "auth": "moca:correct-horse"}


@pytest.mark.parametrize("user,password,match", [
    ("moca", "", "8-128 characters"),
    ("moca", "short", "8-128 characters"),
    ("moca", "x" * 129, "8-128 characters"),
    ("", "long-enough", "user name"),
    ("a:b", "long-enough", "without ':'"),
])
def test_bad_credentials_are_refused(user: str, password: str, match: str) -> None:
    with pytest.raises(TunnelError, match=match):
        tn.tunnel_options(user=user, password=password)


def test_open_tunnel_passes_auth_and_checks_it_is_enforced(fake: FakeConnect) -> None:
    t = tn.open_tunnel(8501, token=TOKEN, user="moca", password="correct-horse", connect=fake)
    assert fake.calls == [{"port": 8501, "token": TOKEN, "options": {"proto": "http", "auth": "moca:correct-horse"}}]
    assert _get(t.public_url) == 401
    assert _get(t.public_url, "moca:correct-horse") == 200
    assert _get(t.public_url, "moca:wrong-password") == 401
    t.close()


def test_a_tunnel_that_answers_without_auth_is_closed_again() -> None:
    open_edge = FakeConnect(enforce=False)
    with pytest.raises(TunnelError, match="without asking for a password"):
        tn.open_tunnel(8501, token=TOKEN, password="correct-horse", connect=open_edge)
    assert open_edge.edges[0].closed


def test_no_token_is_exit_2_with_where_to_get_one(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with pytest.raises(TunnelError, match="dashboard.ngrok.com/get-started/your-authtoken"):
        tn.open_tunnel(8501, token=None, password="correct-horse", connect=FakeConnect())
    assert cli_main(["serve", "--tunnel", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tunnel needs an ngrok authtoken") and tn.TOKEN_HELP in err


def test_bad_password_fails_before_anything_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[Any] = []
    monkeypatch.setattr(tn, "start_server", lambda **kw: started.append(kw))
    with pytest.raises(TunnelError, match="8-128 characters"):
        tn.start(workspace=tmp_path, tunnel=True, token=TOKEN, password="short")
    monkeypatch.setenv("MOCA_TUNNEL_PASSWORD", "short")  # the password may come from the environment (off the command line)
    with pytest.raises(TunnelError, match="8-128 characters"):
        tn.start(workspace=tmp_path, tunnel=True, token=TOKEN)
    assert started == []


def test_colab_notebook_keeps_colab_torch_and_always_tunnels_with_auth() -> None:
    import json
    import re

    nb = json.loads((Path(__file__).resolve().parent.parent / "assets" / "colab.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    install = next(c for c in code if "pip install" in c)
    pattern = re.search(r're\.match\(r"(.+?)", line\)', install).group(1)  # the notebook's own torch filter
    assert re.match(pattern, "torch==2.13.0") and re.match(pattern, "torchvision==0.28.0")
    assert not re.match(pattern, "torchmetrics>=1") and not re.match(pattern, "optuna>=4.5,<6")
    assert any("MOCA_HOME" in c and "/content/drive/MyDrive/moca_runs" in c for c in code)
    assert any("torch.cuda.is_available()" in c for c in code)
    serve = next(c for c in code if '"serve"' in c)
    assert '"--tunnel"' in serve and "NGROK_AUTHTOKEN" in serve and "Public URL" in serve
    assert '"--ngrok-token"' not in serve and '"--password"' not in serve  # secrets stay off the command line


# --- pyngrok itself (network call replaced) ---------------------------------------------------------


def test_pyngrok_gets_the_auth_option_and_token(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from pyngrok import ngrok

    seen: dict[str, Any] = {}

    class FakeNgrokTunnel:
        public_url = "http://abc.ngrok.app"

    def fake_connect(addr: str, pyngrok_config: Any = None, **options: Any) -> Any:
        seen.update(addr=addr, config=pyngrok_config, options=options)
        logging.getLogger("pyngrok.ngrok").debug(f"Creating tunnel with options: {options}")  # what pyngrok logs
        return FakeNgrokTunnel()

    monkeypatch.setattr(ngrok, "connect", fake_connect)
    caplog.set_level(logging.DEBUG)
    t = tn._pyngrok_connect(8600, token=TOKEN, options=tn.tunnel_options(user="moca", password="correct-horse"))
    assert seen["addr"] == "8600" and seen["options"] == {"proto": "http", "auth": "moca:correct-horse"}
    assert seen["config"].auth_token == TOKEN and seen["config"].config_version == "2"  # agent API that enforces basic_auth
    assert t.public_url == "https://abc.ngrok.app"
    assert TOKEN not in caplog.text and "correct-horse" not in caplog.text


def test_pyngrok_failures_become_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyngrok import ngrok
    from pyngrok.exception import PyngrokNgrokError, PyngrokNgrokInstallError

    def no_download(*a: Any, **k: Any) -> Any:
        raise PyngrokNgrokInstallError("An error occurred while downloading ngrok from https://bin.ngrok.com: <urlopen error>")

    monkeypatch.setattr(ngrok, "connect", no_download)
    with pytest.raises(TunnelError, match="could not be downloaded"):
        tn._pyngrok_connect(8600, token=TOKEN, options={"auth": "moca:correct-horse"})

    def bad_token(*a: Any, **k: Any) -> Any:
        raise PyngrokNgrokError(f"The ngrok process errored on start: authentication failed: bad authtoken {TOKEN}. ERR_NGROK_107")

    monkeypatch.setattr(ngrok, "connect", bad_token)
    with pytest.raises(TunnelError) as info:
        tn._pyngrok_connect(8600, token=TOKEN, options={"auth": "moca:correct-horse"})
    assert "refused the authtoken" in str(info.value) and TOKEN not in str(info.value) and tn.TOKEN_HELP in str(info.value)


# --- a real dashboard server -----------------------------------------------------------------------


def test_start_serves_the_dashboard_and_an_authenticated_tunnel(tmp_path: Path, fake: FakeConnect,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    out = io.StringIO()
    served = tn.start(port=_free_port(), workspace=tmp_path / "ws", tunnel=True, token=TOKEN, connect=fake, out=out)
    try:
        assert _get(served.local_url + "/_stcore/health") == 200
        text = out.getvalue()
        assert "Public URL: " + fake.edges[0].url in text
        password = text.split("Generated password (shown once): ")[1].split()[0]
        assert len(password) >= tn.MIN_PASSWORD and text.count(password) == 1
        assert fake.calls[0]["options"]["auth"] == f"moca:{password}"
        assert _get(served.tunnel.public_url) == 401 and _get(served.tunnel.public_url, f"moca:{password}") == 200
        assert TOKEN not in text
        env = (Path("/proc") / str(served.proc.pid) / "environ").read_bytes().split(b"\0")
        assert f"MOCA_HOME={(tmp_path / 'ws').resolve()}".encode() in env
        assert not any(e.startswith(b"NGROK_AUTHTOKEN=") for e in env)  # the child never sees the token
    finally:
        served.stop()
    assert served.proc.poll() is not None and fake.edges[0].closed


def test_unreachable_ngrok_keeps_the_local_server(tmp_path: Path) -> None:
    def unreachable(port: int, *, token: str, options: dict[str, Any]) -> tn.Tunnel:
        raise TunnelError("ngrok could not be reached (URLError: [Errno -3] Temporary failure in name resolution)")

    out = io.StringIO()
    served = tn.start(port=_free_port(), workspace=tmp_path, tunnel=True, token=TOKEN, password="correct-horse",
                      connect=unreachable, out=out)
    try:
        assert served.tunnel is None and "could not be reached" in (served.tunnel_error or "")
        assert "The dashboard is still running locally at " + served.local_url in out.getvalue()
        assert _get(served.local_url + "/_stcore/health") == 200
        assert "correct-horse" not in out.getvalue()
    finally:
        served.stop()


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(TunnelError, match="already in use"):
            tn.start_server(port=s.getsockname()[1], workspace=tmp_path)

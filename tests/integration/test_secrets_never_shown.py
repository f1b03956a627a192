"""A line engineer's secrets never leave the agent as text: a camera's or server's URL login, a
``${VAR}`` taken from the environment, a password field, a key's contents. Each is probed where the agent
shows or sends text (a source's ``last_error`` → ``/status``, ``edge-agent tags`` and the fleet's config
reports; the log; ``edge-agent validate`` and ``--online``), with real peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading

import pytest

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from edge_agent.config import ConfigError, parse_config
from edge_agent.fleet_config import ConfigKeeper
from protocols.redact import mask_credentials

SECRET = "S3cr3t-pw"


def test_mask_keeps_user_and_host_and_hides_only_the_password():
    assert (
        mask_credentials("rtsp://admin:12345@192.168.1.10/stream") == "rtsp://admin:***@192.168.1.10/stream"
    )
    assert mask_credentials(f"cannot open http://user:{SECRET}@cam:81/mjpeg: x") == (
        "cannot open http://user:***@cam:81/mjpeg: x"
    )
    assert mask_credentials("opc.tcp://plc:p@ss@10.0.0.2:4840/") == "opc.tcp://plc:***@10.0.0.2:4840/"
    for plain in ("rtsp://admin@h/x", "http://h/a:b@c", "usb:0", "/data/images/", "no url here"):
        assert mask_credentials(plain) == plain


async def _last_error(src, timeout_s: float = 5.0) -> str:
    await src.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not src.stats.last_error:
                await asyncio.sleep(0.05)
    finally:
        await src.stop(1.0)
    return src.stats.last_error


class _Cam(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # a camera that wants another login
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="cam"')
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>401</html>")

    def log_message(self, *a):
        pass


@pytest.fixture
def http_camera():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cam)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
async def test_unreachable_camera_names_its_url_without_the_password(scheme, caplog):
    caplog.set_level(logging.WARNING)
    url = f"{scheme}://admin:{SECRET}@127.0.0.1:1/stream"
    src = CameraSource(
        "cam", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=5, reconnect_max_s=5)
    )
    err = await _last_error(src)
    assert f"{scheme}://admin:***@127.0.0.1:1/stream" in err and "cannot reach 127.0.0.1:1" in err
    assert SECRET not in err and SECRET not in caplog.text


async def test_http_camera_refusing_the_login_says_so_without_the_password(http_camera, caplog):
    caplog.set_level(logging.WARNING)
    url = f"http://admin:{SECRET}@127.0.0.1:{http_camera}/video"
    src = CameraSource(
        "cam", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=5, reconnect_max_s=5)
    )
    err = await _last_error(src)
    assert "401" in err and f"http://admin:***@127.0.0.1:{http_camera}/video" in err, err
    assert SECRET not in err and SECRET not in caplog.text


async def test_unreachable_opcua_endpoint_with_a_login_is_shown_masked(caplog):
    caplog.set_level(logging.INFO)
    s = OpcUaSettings(
        endpoint=f"opc.tcp://plc:{SECRET}@127.0.0.1:1/x",
        connect_timeout_s=1,
        reconnect_initial_s=5,
        nodes=[{"node_id": "ns=2;s=A", "tag": "a"}],
    )
    err = await _last_error(OpcUaSource("o", s))
    assert "opc.tcp://plc:***@127.0.0.1:1/x" in err, err
    assert SECRET not in err and SECRET not in caplog.text


def _errors(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config({"agent": {"id": "a1"}, **data}, "line1.yaml")
    return "\n".join(e.value.errors)


def test_config_errors_never_show_a_password_or_a_url_login(monkeypatch):
    monkeypatch.setenv("CAM_URL", f"usb:rtsp://admin:{SECRET}@cam/x")
    text = _errors(
        {
            "sources": {
                "m": {"type": "mqtt", "host": "127.0.0.1", "username": "bob", "password": 123456789},
                "o": {"type": "opcua", "endpoint": f"opcua://plc:{SECRET}@10.0.0.2:4840", "nodes": []},
                "cam": {"type": "camera", "url": "${CAM_URL}"},
            }
        }
    )
    assert "sources.m.password" in text and "123456789" not in text
    assert "sources.o.endpoint" in text and "opcua://plc:***@10.0.0.2:4840" in text
    assert "sources.cam" in text and "rtsp://admin:***@cam/x" in text
    assert SECRET not in text


def test_a_key_given_as_its_contents_is_refused_without_showing_it(tmp_path, monkeypatch):
    key = f"-----BEGIN PRIVATE KEY-----\nMII{SECRET}\n-----END PRIVATE KEY-----\n"
    monkeypatch.setenv("CLOUD_KEY", key)
    for f in ("ca.pem", "cert.pem"):
        (tmp_path / f).write_text("x")
    cloud = {
        "endpoint": "127.0.0.1:1",
        "ca_file": "ca.pem",
        "cert_file": "cert.pem",
        "key_file": "${CLOUD_KEY}",
    }
    with pytest.raises(ConfigError) as e:
        parse_config({"agent": {"id": "a1"}, "cloud": cloud}, "line1.yaml", base_dir=str(tmp_path))
    text = "\n".join(e.value.errors)
    assert "cloud.key_file" in text and "PEM" in text
    assert SECRET not in text and "BEGIN PRIVATE KEY" not in text


def test_fleet_config_reports_mask_a_url_login(tmp_path):
    keeper = ConfigKeeper(tmp_path)
    info = {"deployment_id": "d1", "digest": "abc"}
    keeper.refuse(
        info, "rolled_back", f"source cam: not connected (open_failed: cannot open rtsp://admin:{SECRET}@h/x)"
    )
    keeper.note(info, "failed", False, f"the agent did not start on it: http://u:{SECRET}@cam/")
    shown = (tmp_path / "state.json").read_text() + repr(keeper.state)
    assert "rtsp://admin:***@h/x" in shown and SECRET not in shown


async def test_a_sources_errors_reach_the_cloud_without_the_gateways_variables_or_a_login(
    tmp_path, monkeypatch
):
    """What the tenant's admin reads of a source that is down (its ``source_down`` event at a real fleet service):
    the agent's source errors named the PLC's user and host the gateway's environment gave (``${GW_PLC_USER}``,
    ``${GW_PLC_HOST}``) and a camera URL's user name (measured: ``opc.tcp://plc-operator:***@127.0.0.7:...`` and
    ``http://camuser:***@127.0.0.1:...`` in the cloud's store). Now a gateway variable is named, never its value, and
    a login never leaves the gateway; the host written in the config stays. The gateway's own status keeps them."""
    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.agent import Agent
    from tests.integration.test_source_down import quick_watch
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port
    from tests.support.waits import until

    env = {"GW_PLC_HOST": "127.0.0.7", "GW_PLC_USER": "plc-operator", "GW_PLC_PW": SECRET}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dead = free_port()  # nothing listens there
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    cfg = {
        "agent": {"id": "gw1", "site": "s", "line": "l", "data_dir": str(tmp_path / "gw1")},
        "http": {"enabled": False},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://${{GW_PLC_USER}}:${{GW_PLC_PW}}@${{GW_PLC_HOST}}:{dead}",
                "connect_timeout_s": 1,
                "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
            },
            "cam": {
                "type": "camera",
                "url": f"http://camuser:{SECRET}@127.0.0.1:{dead}/mjpeg",
                "open_timeout_s": 1,
            },
        },
        "cloud": {
            "endpoint": f"127.0.0.1:{port}",
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "agents" / "gw1.pem"),
            "key_file": str(pki / "agents" / "gw1.key"),
            "report_s": 0.5,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
        },
    }
    await srv.start()
    agent = quick_watch(Agent(parse_config(cfg)))
    agent.source_down_after_s = 1.0  # 30 s in service
    await agent.start()
    try:

        def told() -> list[dict]:
            return srv.store.events(tenant="default", kind="source_down", limit=50)[0]

        await until(
            lambda: {e["payload"]["source"] for e in told()} >= {"plc", "cam"}, 30, "source_down at the cloud"
        )
        sent = json.dumps(told())
        local = json.dumps(agent.status()["sources"])
    finally:
        await agent.stop()
        await srv.stop()
    for value in (*env.values(), "camuser"):
        assert value not in sent, (value, sent)
    assert f"opc.tcp://***@<$GW_PLC_HOST>:{dead}" in sent and f"http://***@127.0.0.1:{dead}/mjpeg" in sent, (
        sent
    )
    # the gateway's own status page keeps what its engineer needs (never a password)
    assert (
        f"opc.tcp://plc-operator:***@127.0.0.7:{dead}" in local and f"camuser:***@127.0.0.1:{dead}" in local
    )
    assert SECRET not in local


def test_a_login_field_written_in_the_config_is_never_in_a_text_for_the_cloud(monkeypatch):
    """A source's login fields (a user name, a password) are hidden by their place in what the agent sends the cloud,
    as gateway variables are by name: an OPC UA source refusing to send a password in clear names its user."""
    from edge_agent.cloud_text import CloudText

    monkeypatch.setenv("GW_BROKER", "broker.plant7.example")
    cfg = parse_config(
        {
            "agent": {"id": "a1"},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://plc7:4840",
                    "username": "line-op",
                    "password": SECRET,
                    "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
                },
                "mq": {
                    "type": "mqtt",
                    "host": "${GW_BROKER}",
                    "username": "mq",
                    "subscriptions": [{"topic": "a"}],
                },
            },
        }
    )
    text = CloudText(cfg).text
    said = "the server at opc.tcp://plc7:4840 would take user 'line-op''s password; mq 'mq' at broker.plant7.example"
    # a user named as the source ('mq') stays: every event names the source in clear
    assert text(said) == (
        "the server at opc.tcp://plc7:4840 would take user '<sources.plc.username>''s password; mq 'mq' at <$GW_BROKER>"
    )
    assert text(f"rtsp://admin:{SECRET}@cam/x?usr=admin&pwd={SECRET}") == "rtsp://***@cam/x?usr=***&pwd=***"


def _fleet_agent_config(
    tmp_path, port: int, pki, sources: dict, data_dir: str | None = None, **agent
) -> dict:
    """An agent ``gw1`` reporting to the fleet service at ``port`` quickly (its state every 0.5 s)."""
    return {
        "agent": {
            "id": "gw1",
            "site": "s",
            "line": "l",
            "data_dir": data_dir or str(tmp_path / "gw1"),
            **agent,
        },
        "http": {"enabled": False},
        "sources": sources,
        "cloud": {
            "endpoint": f"127.0.0.1:{port}",
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "agents" / "gw1.pem"),
            "key_file": str(pki / "agents" / "gw1.key"),
            "report_s": 0.5,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
        },
    }


async def _told_the_cloud(tmp_path, cfg_of, until_told) -> list[dict]:
    """The events a real fleet service holds of a real agent built from ``cfg_of(port, pki)``, once
    ``until_told(events)``; the agent's source watch quick and a source down after 1 s."""
    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.agent import Agent
    from tests.integration.test_source_down import quick_watch
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port
    from tests.support.waits import until

    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    try:
        agent = quick_watch(Agent(parse_config(cfg_of(port, pki))))
        agent.source_down_after_s = 1.0  # 30 s in service
        await agent.start()  # formerly re.error for a source named line3\plc1 with a short login
        try:

            def told() -> list[dict]:
                return [e["payload"] for e in srv.store.events(tenant="default", limit=100)[0]]

            await until(lambda: until_told(told()), 30, "the events at the cloud")
            return told()
        finally:
            await agent.stop()
    finally:
        await srv.stop()


async def test_a_source_named_with_a_backslash_and_a_short_login_starts_and_its_errors_reach_the_cloud(
    tmp_path, monkeypatch
):
    """A SCADA-style source name (``line3\\plc1``, which validation takes) with a 5-character user made every text
    for the cloud raise ``re.error`` (the login's place was a ``re.sub`` template: ``\\p`` a bad escape), so the
    agent's first event, ``started``, ended its start: it never served. Now it starts, the source's ``source_down``
    names it as configured, and the login stays hidden (a name holding ``\\g<0>`` put it back)."""
    from tests.support.peers import free_port

    monkeypatch.setenv("GW_PLC_HOST", "127.0.0.7")
    dead = free_port()
    node = [{"node_id": "ns=2;s=A", "tag": "a"}]
    sources = {
        "line3\\plc1": {
            "type": "opcua",
            "endpoint": f"opc.tcp://admin:{SECRET}@${{GW_PLC_HOST}}:{dead}",
            "username": "admin",
            "password": SECRET,
            "connect_timeout_s": 1,
            "nodes": node,
        },
        "op\\g<0>": {
            "type": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{dead}/operator-7",
            "username": "operator-7",
            "connect_timeout_s": 1,
            "nodes": node,
        },
    }
    down = {"line3\\plc1", "op\\g<0>"}
    events = await _told_the_cloud(
        tmp_path,
        lambda port, pki: _fleet_agent_config(tmp_path, port, pki, sources),
        lambda evts: {e.get("source") for e in evts if e["kind"] == "source_down"} >= down,
    )
    sent = json.dumps(events)
    assert "started" in {e["kind"] for e in events}
    for value in ("127.0.0.7", SECRET, "admin", "operator-7"):
        assert value not in sent, (value, sent)
    # the host written in the config stays; a login's place is shown, never its value
    assert f"opc.tcp://127.0.0.1:{dead}/<sources.op\\\\g<0>.username>" in sent, sent


async def test_what_names_a_source_reaches_the_cloud_as_configured_and_only_free_text_is_hidden(
    tmp_path, monkeypatch
):
    """The fleet's console pairs an episode's start and end by its source, and names a deployment by its version:
    hiding a gateway variable's value in every field of an event rewrote them (a PLC reached at ``${GW_PLC7}`` =
    ``plc7``, its DNS name, sent ``source: <$GW_PLC7>``; a ``started`` event's sources and pipelines, a version
    taken from a variable, ``issued_by`` equal to a login likewise). Now only free text is (``message``,
    ``last_error``, ``reason``...), and never a value the agent sends in clear anyway (its labels, its id) or equal to
    a name its config gives: ``plc7`` stays ``plc7``, the other host (``${GW_PLC_HOST}``) is hidden."""
    from tests.support.peers import free_port

    monkeypatch.setenv("GW_PLC7", "plc7")  # a DNS name equal to the source's (resolves nowhere: down)
    monkeypatch.setenv("GW_PLC_HOST", "127.0.0.7")
    dead = free_port()
    node = [{"node_id": "ns=2;s=A", "tag": "a"}]
    sources = {
        "plc7": {
            "type": "opcua",
            "endpoint": f"opc.tcp://${{GW_PLC7}}:{dead}",
            "connect_timeout_s": 1,
            "nodes": node,
        },
        "press": {
            "type": "opcua",
            "endpoint": f"opc.tcp://${{GW_PLC_HOST}}:{dead}",
            "connect_timeout_s": 1,
            "nodes": node,
        },
    }
    events = await _told_the_cloud(
        tmp_path,
        lambda port, pki: _fleet_agent_config(tmp_path, port, pki, sources),
        lambda evts: sum(e["kind"] == "source_down" for e in evts) >= 2,
    )
    down = {e["source"]: e for e in events if e["kind"] == "source_down"}
    assert set(down) == {"plc7", "press"}  # formerly '<$GW_PLC7>' for plc7
    assert "plc7" in down["plc7"]["message"]
    assert "127.0.0.7" not in json.dumps(down["press"]) and "<$GW_PLC_HOST>" in down["press"]["last_error"]


def _offline_config(tmp_path, sections: dict):
    """An agent config of id ``a1`` trusting a key file, with ``sections`` (its sources, models), parsed."""
    (tmp_path / "k.pub").write_text("a key\n")
    return parse_config({"agent": {"id": "a1"}, "trusted_keys": [str(tmp_path / "k.pub")], **sections})


def test_a_text_naming_what_its_record_sends_in_clear_keeps_it(tmp_path, monkeypatch):
    """A deployment's reason named the version the fleet deploys as ``<$GW_BAD>`` when the config refused it by a
    variable (``refused_versions: [${GW_BAD}]``): the version is sent in clear in the same record, so it stays; the
    identity fields (slot, versions, package, issued_by) are never rewritten, the free text around them is."""
    from edge_agent.cloud_text import CloudText

    monkeypatch.setenv("GW_BAD", "1.3.0")
    monkeypatch.setenv("GW_PLC_HOST", "127.0.0.7")
    cfg = _offline_config(
        tmp_path,
        {
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://${GW_PLC_HOST}:4840",
                    "username": "admin",
                    "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
                }
            },
            "models": {"m": {"name": "part-inspection", "refused_versions": ["${GW_BAD}"]}},
        },
    )
    cloud = CloudText(cfg)
    evt = {
        "kind": "swap_refused",
        "slot": "m",
        "stage": "policy",
        "from_version": "1.4.0",
        "to_version": "1.3.0",
        "issued_by": "admin",
        "reason": "downgrade from 1.4.0 to 1.3.0 refused (admin at 127.0.0.7)",
    }
    assert cloud.tree(evt) == {
        **evt,
        "reason": "downgrade from 1.4.0 to 1.3.0 refused (admin at <$GW_PLC_HOST>)",
    }
    assert cloud.text("a user admin, 1.3.0 refused") == "a user <sources.plc.username>, <$GW_BAD> refused"
    assert cloud.text("1.3.0 refused", ("1.3.0",)) == "1.3.0 refused"


def test_a_text_hidden_once_is_the_same_hidden_again(tmp_path, monkeypatch):
    """A stored backlog is hidden again as it is sent, also the events this agent hid as it recorded them before a
    restart: a user ``admin`` on a source named ``admin-plc`` was hidden inside its own place
    (``<sources.<sources.admin-plc.username>-plc.username>``), and a variable's place likewise. Now a second pass
    leaves the places as they are: the event goes out as stored."""
    import json as _json

    from edge_agent.cloud_text import CloudText

    monkeypatch.setenv("GW_PLC", "press7")
    cfg = _offline_config(
        tmp_path,
        {
            "sources": {
                "admin-plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://${GW_PLC}:4840",
                    "username": "admin",
                    "password": SECRET,
                    "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
                }
            },
        },
    )
    cloud = CloudText(cfg)
    once = cloud.text(f"user admin rejected on admin-plc at opc.tcp://press7:4840 ({SECRET})")
    assert once.startswith("user <sources.admin-plc.username> rejected") and SECRET not in once, once
    assert cloud.text(once) == once
    stored = _json.dumps(
        {"kind": "source_down", "source": "admin-plc", "message": once}, separators=(",", ":")
    )
    assert cloud.payload(stored.encode()) == stored.encode()


def test_a_name_sent_in_clear_is_never_hidden_inside_where_it_would_tell_a_login(tmp_path, monkeypatch):
    """A login or a variable's value that is one word of a source's name was hidden inside the name in every free
    text, beside the ``source`` field that names it whole: ``source: admin-plc`` with ``source
    <sources.admin-plc.username>-plc has not been connected`` told the user ``admin``, and ``halle2-<$GW_USER>``
    beside ``halle2-press`` the variable's value. Now a name standing alone is held whole; the login and the value
    are still hidden where they stand alone, and a name inside a longer word hides nothing (a source ``plc``
    never keeps ``plc7.corp`` from ``${GW_PLC}`` in view)."""
    from edge_agent.cloud_text import CloudText

    monkeypatch.setenv("GW_USER", "press")
    monkeypatch.setenv("GW_PLC", "plc7.corp")
    node = [{"node_id": "ns=2;s=A", "tag": "a"}]
    cfg = _offline_config(
        tmp_path,
        {
            "sources": {
                "admin-plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://10.0.0.5:4840",
                    "username": "admin",
                    "nodes": node,
                },
                "halle2-press": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://10.0.0.6:4840",
                    "username": "${GW_USER}",
                    "nodes": node,
                },
                "plc": {"type": "opcua", "endpoint": "opc.tcp://${GW_PLC}:4840", "nodes": node},
            },
        },
    )
    cloud = CloudText(cfg)
    evt = {
        "kind": "source_down",
        "source": "admin-plc",
        "message": "source admin-plc down: user admin refused",
    }
    assert cloud.tree(evt)["message"] == "source admin-plc down: user <sources.admin-plc.username> refused"
    # where a host is the name with a domain (the hiders' bounds: no letter or digit beside it)
    evt = {
        "kind": "source_down",
        "source": "admin-plc",
        "message": "cannot reach opc.tcp://admin-plc.factory:4840",
    }
    assert cloud.tree(evt)["message"] == evt["message"]
    told = cloud.text("halle2-press: user press refused; plc at opc.tcp://plc7.corp:4840")
    assert told == ("halle2-press: user <$GW_USER> refused; plc at opc.tcp://<$GW_PLC>:4840"), told


@pytest.mark.parametrize(
    ("source", "password", "text", "shown"),
    [
        ("press", "${GW_PASS}", "login refused for press#2024", "login refused for <$GW_PASS>"),
        ("plc1", "plc1!Secret", "login refused for plc1!Secret", "login refused for <sources.plc1.password>"),
        ("cam", "${GW_PASS}", "refused: error 42 go", "refused: <$GW_PASS>"),
    ],
)
def test_a_name_sent_in_clear_never_splits_a_secret_it_stands_in(
    tmp_path, monkeypatch, source, password, text, shown
):
    """Names sent in clear were first held out of the hiders' reach where they stood alone: a name inside a secret
    (a source ``press`` in a password ``press#2024``, a record's ``severity: error`` in ``error 42 go``) split it, and
    the whole secret was sent. A name is put back whole after hiding, only where the hiders took a word of it."""
    from edge_agent.cloud_text import CloudText

    monkeypatch.setenv("GW_PASS", "press#2024" if source == "press" else "error 42 go")
    src = {
        "type": "opcua",
        "endpoint": "opc.tcp://10.0.0.5:4840",
        "username": "operator",
        "password": password,
    }
    cfg = _offline_config(
        tmp_path,
        {
            "sources": {source: {**src, "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}]}},
        },
    )
    evt = {"kind": "source_down", "source": source, "severity": "error", "message": text}
    assert CloudText(cfg).tree(evt)["message"] == shown


def _stored_outbox(data, *records: tuple[str, dict], owner: tuple[str, str] | None = None):
    """The outbox an agent finds in ``data``, holding ``records`` (as a former version stored them), made under
    ``owner`` (tenant, agent id) when given."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = Outbox(OutboxSettings(), data, owner=owner)
    ob.open()
    for kind, payload in records:
        ob.append(kind, payload)
    ob.close()
    return ob


async def test_events_an_outbox_held_before_they_were_hidden_reach_the_cloud_hidden(tmp_path, monkeypatch):
    """An upgrade finds the outbox's backlog as a former version stored it (days of a gateway offline): its
    ``source_down`` went out byte for byte with the PLC's user and the host from ``${GW_PLC_HOST}``. Now a stored
    event's free text is hidden when it is sent, with the running config's values."""
    import time

    from tests.support.peers import free_port

    monkeypatch.setenv("GW_PLC_HOST", "127.0.0.7")
    dead = free_port()
    stored = {
        "kind": "source_down",
        "t": time.time() - 3600,
        "source": "plc",
        "active": True,
        "state": "backoff",
        "down_s": None,
        "last_error": "unreachable: cannot reach opc.tcp://plc-operator:***@127.0.0.7:4840",
        "flaps": 1,
        "message": "source plc has not been connected for 30 s (stored before the upgrade)",
    }
    _stored_outbox(tmp_path / "gw1", ("event", stored))
    sources = {
        "plc": {
            "type": "opcua",
            "endpoint": f"opc.tcp://plc-operator:{SECRET}@${{GW_PLC_HOST}}:{dead}",
            "connect_timeout_s": 1,
            "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
        }
    }
    events = await _told_the_cloud(
        tmp_path,
        lambda port, pki: _fleet_agent_config(tmp_path, port, pki, sources),
        lambda evts: any("before the upgrade" in e.get("message", "") for e in evts),
    )
    (old,) = [e for e in events if "before the upgrade" in e.get("message", "")]
    assert old["last_error"] == "unreachable: cannot reach opc.tcp://***@<$GW_PLC_HOST>:4840", old
    assert {k: v for k, v in old.items() if k != "last_error"} == {
        k: v for k, v in stored.items() if k != "last_error"
    }


async def test_the_outboxs_own_events_reach_the_cloud_without_a_gateway_variable(tmp_path, monkeypatch):
    """The outbox records its own events (``outbox_corrupt`` ...) past the agent's hiding: with ``agent.data_dir:
    ${GW_DATA}`` the cloud was told the folder a corrupt outbox was moved to, the variable's value. Now its free text
    (``moved_to``, ``reason``) is hidden when sent; its numbers (epochs, counts) the cloud reads stay."""
    import os

    from tests.support.peers import free_port

    data = tmp_path / "plant7-gateway-data"
    monkeypatch.setenv("GW_DATA", str(data))
    # made under this agent's own tenant (its certificate's: ``default``, gw1), as outbox-epoch.json records it: a
    # store whose owner cannot be told, or another tenant's, is held at start without an event to this tenant
    ob = _stored_outbox(data, ("result", {"i": 1}), owner=("default", "gw1"))
    os.truncate(ob.path, 0)  # an outbox of a known epoch left empty: moved aside at start, outbox_corrupt
    dead = free_port()
    sources = {
        "plc": {
            "type": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{dead}",
            "connect_timeout_s": 1,
            "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
        }
    }
    events = await _told_the_cloud(
        tmp_path,
        lambda port, pki: _fleet_agent_config(tmp_path, port, pki, sources, data_dir="${GW_DATA}"),
        lambda evts: any(e["kind"] == "outbox_corrupt" for e in evts),
    )
    (corrupt,) = [e for e in events if e["kind"] == "outbox_corrupt"]
    assert str(data) not in json.dumps(corrupt) and corrupt["moved_to"].startswith("<$GW_DATA>/"), corrupt
    # (max(previous + 1, the clock in microseconds))
    assert corrupt["epoch"] > corrupt["previous_epoch"], corrupt


async def test_an_event_this_agent_hid_as_it_recorded_it_reaches_the_cloud_as_it_was_stored(
    tmp_path, monkeypatch
):
    """The uplink hid every stored event's free text again as it sent it: ~0.1 ms an event on the loop's pool while
    a backlog drained (a 100k-event backlog: 12.8 s of CPU), and a login's place hidden once more inside itself (a
    user ``admin`` on a source named ``admin-plc``: ``<sources.<sources.admin-plc.username>-plc.username>``). Now
    only what the agent did not hide as it recorded it (a former version's backlog, the outbox's own events) is
    hidden at send; its own events go out as stored."""
    from tests.support.peers import free_port

    dead = free_port()
    sources = {
        "admin-plc": {
            "type": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{dead}",
            "username": "admin",
            "password": SECRET,
            "connect_timeout_s": 1,
            "nodes": [{"node_id": "ns=2;s=A", "tag": "a"}],
        }
    }
    events = await _told_the_cloud(
        tmp_path,
        lambda port, pki: _fleet_agent_config(tmp_path, port, pki, sources),
        lambda evts: any(e["kind"] == "source_down" for e in evts),
    )
    sent = json.dumps(events)
    assert SECRET not in sent and "source admin-plc has not been connected" in sent, sent
    assert "<sources." not in sent, sent  # hidden once, as recorded (the source's name whole, never inside)

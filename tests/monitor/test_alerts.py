"""Alerts against a real webhook receiver on loopback: down, then back; across a restart;
de-duplicated; and raised by the service after N consecutive risky decisions."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from liveserver import free_port, make_settings, prepared
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.monitor.alerts import (
    AnchorStreaks,
    Webhook,
    WebhookDispatcher,
    acknowledge,
    list_alerts,
    message,
    parse_webhooks,
    raise_alert,
)
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store


class Receiver:
    """A webhook receiver on a fixed loopback port that can be started late."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], dict]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()},
                                 json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def store(tmp_path):
    s = Store(Settings(data_dir=tmp_path, log_origin="test.example/alerts"))
    yield s
    s.close()


def test_an_alert_raised_while_the_receiver_is_down_arrives_once_it_is_back(store):
    port = free_port()
    hook = Webhook(url=f"http://127.0.0.1:{port}/hook", shape="slack")
    alert_id = raise_alert(store, "anchor_risk", {"title": "test", "model": "m@1"},
                           dedup_key="k1", webhooks=[hook])
    dispatcher = WebhookDispatcher(store, base=0.05, cap=0.2, poll=0.02).start()
    receiver = Receiver(port)
    try:
        assert _wait(lambda: list_alerts(store)[0]["deliveries"][0]["attempts"] >= 3)
        assert list_alerts(store)[0]["deliveries"][0]["status"] == "pending"
        receiver.start()
        assert _wait(lambda: list_alerts(store)[0]["deliveries"][0]["status"] == "delivered")
        time.sleep(0.3)
    finally:
        dispatcher.stop()
        receiver.stop()
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert headers["x-xai-alert-id"] == alert_id
    assert body["text"].startswith("[XAI-Sandbox] test")


def test_pending_deliveries_survive_a_restart(tmp_path):
    settings = Settings(data_dir=tmp_path, log_origin="test.example/alerts")
    port = free_port()
    receiver = Receiver(port).start()
    first = Store(settings)
    raise_alert(first, "anchor_risk", {"title": "before the restart"}, dedup_key="r",
                webhooks=[Webhook(f"http://127.0.0.1:{port}/x")])
    first.close()  # the process ends before any delivery
    second = Store(settings)
    dispatcher = WebhookDispatcher(second, poll=0.02).start()
    try:
        assert _wait(lambda: len(receiver.received) == 1)
    finally:
        dispatcher.stop()
        receiver.stop()
        second.close()
    assert receiver.received[0][1]["body"]["title"] == "before the restart"


def test_an_open_alert_is_not_raised_twice_and_logs_once(store):
    assert raise_alert(store, "anchor_risk", {"title": "a"}, dedup_key="same")
    assert raise_alert(store, "anchor_risk", {"title": "a"}, dedup_key="same") is None
    [alert] = list_alerts(store, open_only=True)
    acknowledge(store, alert["alert_id"], "carl")
    assert list_alerts(store, open_only=True) == []
    assert raise_alert(store, "anchor_risk", {"title": "a"}, dedup_key="same")
    from xai_sandbox.store.verify import verify_log

    assert verify_log(store.engine, store.keys.verifiers(), store.log.origin).ok


def test_message_shapes():
    alert = {"id": "i", "kind": "k", "raised_at": "t", "body": {"title": "T", "model": "m"}}
    assert message("generic", alert)["body"]["model"] == "m"
    assert message("wecom", alert)["msgtype"] == "markdown"
    assert "T" in message("slack", alert)["text"]
    assert message("teams", alert)["@type"] == "MessageCard"
    assert parse_webhooks("slack=http://a/b, http://c/d") == [
        Webhook("http://a/b", "slack"), Webhook("http://c/d", "generic")]
    with pytest.raises(InvalidInputError):
        parse_webhooks("fax=http://a")
    with pytest.raises(InvalidInputError):
        parse_webhooks("file:///etc/passwd")


def test_streaks_fire_once_at_n_consecutive_hits():
    s = AnchorStreaks(3)
    hit = [{"anchor": "a", "hit": True}]
    miss = [{"anchor": "a", "hit": False}]
    assert s.update("m", "d1", hit) == [] and s.update("m", "d2", hit) == []
    assert s.update("m", "d3", miss) == []  # broken: starts again
    fired = [s.update("m", f"e{i}", hit) for i in range(3)]
    assert fired[:2] == [[], []] and fired[2][0][1] == ["e0", "e1", "e2"]


def test_the_service_alerts_after_five_consecutive_risky_decisions(tmp_path):
    from xai_sandbox.demos.credit import credit_models

    port = free_port()
    receiver = Receiver(port).start()
    server = prepared(make_settings(tmp_path, webhooks=f"teams=http://127.0.0.1:{port}/t"))
    server.start()
    spec = {"model_id": "credit-watch", "version": "1",
            "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                       "outcome_labels": {"bad": {"en": "declined", "zh": "拒绝"},
                                          "good": {"en": "approved", "zh": "批准"}}},
            "anchors": {"version": "watch/1", "anchors": [
                {"id": "foreign-worker", "label": {"en": "Foreign worker", "zh": "外籍劳工"},
                 "covers": {"features": ["foreign_worker"]},
                 "regulations": ["ECOA 15 U.S.C. 1691(a)(1)"],
                 "risk": {"kind": "value", "feature": "foreign_worker", "equals": "A201"}}]}}
    rows = [r for r in credit_models().data.rows if r["foreign_worker"] == "A201"][:5]
    try:
        with server.client("olivia-operator") as c:
            assert c.post("/v1/models", json=spec).status_code == 201
            for i, row in enumerate(rows):
                assert c.post("/v1/decisions", json={"model_id": "credit-watch",
                                                     "subject_id": f"w{i}",
                                                     "features": row}).status_code == 201
        assert _wait(lambda: len(receiver.received) == 1)
        with server.client("carl-compliance") as c:
            [alert] = c.get("/v1/alerts").json()
            assert alert["body"]["anchor"] == "foreign-worker"
            assert alert["body"]["consecutive"] == 5 and len(alert["body"]["decisions"]) == 5
            assert alert["deliveries"][0]["status"] == "delivered"
            # The open alert shows in the reports of the model's decisions.
            mine = c.get("/v1/decisions", params={"model": "credit-watch@1"}).json()[0]
            report = c.get(f"/v1/decisions/{mine['decision_id']}/report").json()
            assert report["monitoring"]["open_alerts"][0]["kind"] == "anchor_risk"
            assert report["monitoring"]["open_alerts"][0]["this_decision"]
            html = c.get(f"/v1/decisions/{mine['decision_id']}/report.html").text
            assert "Alerts and drift open on this model" in html and "anchor_risk" in html
            assert c.post(f"/v1/alerts/{alert['alert_id']}/ack").status_code == 200
            assert c.get("/v1/alerts", params={"open_only": True}).json() == []
        with server.client("alice") as c:
            assert c.get("/v1/alerts").status_code == 403
        with server.client("olivia-operator") as c:
            text = c.get("/metrics").text
            assert "xai_alert_deliveries_pending 0.0" in text
            assert "xai_explanation_success_rate 1.0" in text
            assert ('xai_anchor_hits_total{anchor="foreign-worker",model="credit-watch@1"} 5.0'
                    in text)
    finally:
        server.stop()
        receiver.stop()
    assert receiver.received[0][1]["@type"] == "MessageCard"


def test_a_streak_continues_across_a_restart(tmp_path):
    from xai_sandbox.demos.credit import credit_models
    from xai_sandbox.workflows import Decider

    spec = {"model_id": "watch", "version": "1",
            "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                       "outcome_labels": {"bad": {"en": "d", "zh": "d"},
                                          "good": {"en": "a", "zh": "a"}}},
            "anchors": {"version": "w/1", "anchors": [
                {"id": "fw", "label": {"en": "fw", "zh": "fw"},
                 "covers": {"features": ["foreign_worker"]},
                 "risk": {"kind": "value", "feature": "foreign_worker", "equals": "A201"}}]}}
    rows = [r for r in credit_models().data.rows if r["foreign_worker"] == "A201"][:5]
    settings = Settings(data_dir=tmp_path, log_origin="test.example/alerts")
    first = Store(settings)
    decider = Decider(first)
    decider.register(spec)
    for i, row in enumerate(rows[:3]):
        decider.decide(model_id="watch", subject_id=f"s{i}", features=row)
    first.close()  # restart after three of five
    second = Store(settings)
    try:
        decider = Decider(second)
        decider.load_registered()
        for i, row in enumerate(rows[3:], 3):
            decider.decide(model_id="watch", subject_id=f"s{i}", features=row)
        [alert] = list_alerts(second)
        assert alert["body"]["consecutive"] == 5
    finally:
        second.close()

"""The MQTT results sink against a real mosquitto broker the tests start and stop.

Real parts: Debian's mosquitto on a free port (generated config, persistence in
tmp_path), paho-mqtt on both sides, the edge agent running the tiny real bundle on the
shipped street video.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config_owner import MqttConfig
from edge_agent.errors import ConfigError
from edge_agent.results import MemorySink
from edge_agent.sinks.mqtt import MqttSink, Summary, is_change, summarize
from edge_agent.transport_fake import FakeTransport
from tests.edge_agent.broker import Mosquitto, write_password_file, write_server_pki
from tests.edge_agent.conftest import agent_config
from tests.edge_agent.test_results import check_result_line


class Collector:
    """A subscriber that keeps every message it receives (topic, payload, retain)."""

    def __init__(self, port: int, topic: str = "#", *, client_id: str = "", persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10.0), "the test subscriber could not subscribe"

    def _on_message(self, _c, _u, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, pred, timeout_s: float = 15.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def _result_ids(collector: Collector, topic: str) -> list[int]:
    return [json.loads(p)["frame_id"] for p in collector.payloads(topic)]


# --------------------------------------------------------------------------- pure parts

SUMMARY_CASES = [
    # payload, expected (label, person, detections)
    ({"top_k": [{"index": 1, "label": "dog", "score": 0.7}, {"index": 0, "label": "cat", "score": 0.2}]},
     ("dog", False, 0)),
    ({"detections": [{"label": "car", "score": 0.9, "index": 2, "box_xyxy": [0, 0, 1, 1]},
                     {"label": "person", "score": 0.6, "index": 0, "box_xyxy": [0, 0, 1, 1]}]}, ("car", True, 2)),
    ({"detections": [{"label": "Person", "score": 0.3, "index": 0, "box_xyxy": [0, 0, 1, 1]}]}, ("Person", False, 1)),
    ({"detections": []}, ("", False, 0)),
    ({"error": "cloud unavailable"}, ("error", False, 0)),
]


@pytest.mark.parametrize("payload,expected", SUMMARY_CASES)
def test_summarize(payload, expected) -> None:
    s = summarize(payload, ("person",), 0.5)
    assert (s.label, s.person, s.detections) == expected


def test_changes_are_label_person_or_detections() -> None:
    dog = Summary("dog", 0.7, False, 0)
    assert is_change(None, dog)
    assert not is_change(dog, Summary("dog", 0.9, False, 0))
    assert is_change(dog, Summary("cat", 0.9, False, 0))
    assert is_change(dog, Summary("dog", 0.9, True, 0))
    assert is_change(dog, Summary("dog", 0.9, False, 1))


@pytest.mark.parametrize("values,key", [
    ({"qos": 3}, "mqtt.qos"),
    ({"publish": "some"}, "mqtt.publish"),
    ({"password": "hunter2"}, "mqtt.username"),
    ({"topic_prefix": "a/#"}, "mqtt.topic_prefix"),
    ({"port": 0}, "mqtt.port"),
    ({"ca_file": "ca.pem"}, "mqtt.tls"),
])
def test_config_errors_name_the_key(values, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        MqttConfig(**values)
    assert "hunter2" not in str(info.value)


def test_off_by_default_and_paho_not_imported(tiny_bundle) -> None:
    import subprocess
    import sys

    code = ("import sys; from edge_agent.agent import EdgeAgent; from edge_agent.config import EdgeConfig; "
            "import pathlib; c = EdgeConfig(bundle=pathlib.Path('.')); "
            "assert not c.mqtt.enabled and not c.liveview.enabled; "
            "bad = [m for m in ('paho', 'torch', 'onnx', 'http.server', 'edge_agent.liveview') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- against the broker


def test_agent_publishes_every_result_state_and_discovery(tiny_bundle, tail_server, broker) -> None:
    watcher = Collector(broker.port)
    cfg = agent_config(tiny_bundle, runtime__max_frames=12, mqtt__enabled=True, mqtt__port=broker.port,
                       mqtt__person_labels="dog,cat", mqtt__person_min_score=0.0)
    sink = MemorySink()
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=sink).start()
    try:
        assert agent.run_until_done(60.0)
    finally:
        agent.stop()
    base = "splitinfer/test-agent"
    assert watcher.wait_for(lambda: len(watcher.payloads(f"{base}/result")) >= len(sink.results))
    lines = [json.loads(p) for p in watcher.payloads(f"{base}/result")]
    assert sorted(line["frame_id"] for line in lines) == sorted(r.frame_id for r in sink.results)
    for line in lines:
        check_result_line(line)
    assert watcher.wait_for(lambda: watcher.payloads(f"{base}/availability")[-1:] == [b"offline"])
    watcher.close()

    # a late subscriber (Home Assistant starting) gets the retained discovery and state
    late = Collector(broker.port, "#")
    assert late.wait_for(lambda: len({t for t, _, r in late.messages if r}) >= 4)
    retained = {t: json.loads(p) if p.startswith(b"{") else p for t, p, r in late.messages if r}
    late.close()
    person = retained["homeassistant/binary_sensor/splitinfer_test_agent/person/config"]
    label = retained["homeassistant/sensor/splitinfer_test_agent/last_label/config"]
    assert person["state_topic"] == label["state_topic"] == f"{base}/state"
    assert person["payload_on"] == "ON" and person["unique_id"] != label["unique_id"]
    assert person["device"]["model"] == tiny_bundle.name
    state = retained[f"{base}/state"]
    last = sink.results[-1].payload["top_k"][0]["label"]
    assert state["label"] == last and state["person"] == "ON"  # dog/cat count as "person" here
    assert retained[f"{base}/availability"] == b"offline"


def test_changes_mode_publishes_only_changes(tiny_bundle, tail_server, broker) -> None:
    watcher = Collector(broker.port, "splitinfer/+/result")
    cfg = agent_config(tiny_bundle, runtime__max_frames=20, mqtt__enabled=True, mqtt__port=broker.port,
                       mqtt__publish="changes", mqtt__discovery=False)
    sink = MemorySink()
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=sink).start()
    try:
        assert agent.run_until_done(60.0)
    finally:
        agent.stop()
    by_id = {r.frame_id: r for r in sorted(sink.results, key=lambda r: r.frame_id)}
    # results reach the sink in completion order; a change is judged in that order
    expected, previous = [], None
    for r in sink.results:
        top = r.payload["top_k"][0]["label"]
        if top != previous:
            expected.append(r.frame_id)
        previous = top
    assert watcher.wait_for(lambda: len(watcher.payloads("splitinfer/test-agent/result")) >= len(expected))
    time.sleep(0.3)
    assert _result_ids(watcher, "splitinfer/test-agent/result") == expected
    assert len(expected) < len(by_id), "the video's top label never repeated: the test cannot tell modes apart"
    watcher.close()


@pytest.mark.slow
def test_broker_restart_mid_run_loses_no_result_at_qos1(tiny_bundle, tail_server, broker) -> None:
    # the subscriber keeps a persistent session, so the broker queues for it while it is away too
    watcher = Collector(broker.port, "splitinfer/+/result", client_id="ha-test", persistent=True)
    cfg = agent_config(tiny_bundle, runtime__max_frames=90, source__fps_cap=30.0, source__loop=True,
                       mqtt__enabled=True, mqtt__port=broker.port, mqtt__qos=1, mqtt__reconnect_initial_s=0.1,
                       mqtt__reconnect_max_s=0.5, mqtt__close_timeout_s=20.0)
    sink = MemorySink()
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=sink).start()
    mqtt_sink = next(s for s in agent.sinks if isinstance(s, MqttSink))
    try:
        assert watcher.wait_for(lambda: len(watcher.payloads("splitinfer/test-agent/result")) >= 15)
        broker.restart(down_s=1.0)  # results keep coming while the broker is down
        assert agent.run_until_done(60.0)
    finally:
        agent.stop()
    assert mqtt_sink.connects >= 2, "the sink never reconnected"
    expected = {r.frame_id for r in sink.results}
    assert len(expected) == 90
    assert watcher.wait_for(lambda: set(_result_ids(watcher, "splitinfer/test-agent/result")) >= expected, 30.0)
    assert mqtt_sink.dropped == 0 and mqtt_sink.unacknowledged == 0
    watcher.close()


def test_an_unreachable_broker_is_reported_once_and_results_wait_for_it(tmp_path, caplog) -> None:
    from edge_agent.results import FrameResult
    from edge_agent.types import Path

    caplog.set_level(logging.DEBUG, logger="edge_agent.sinks.mqtt")
    later = Mosquitto(tmp_path / "later")  # its port is free until it starts
    sink = MqttSink(MqttConfig(enabled=True, host="127.0.0.1", port=later.port, reconnect_initial_s=0.1,
                               reconnect_max_s=0.2, discovery=False), agent_id="early")
    try:
        results = [FrameResult(frame_id=i, capture_unix_ms=0, source="s", cut="conv1", path=Path.SPLIT, stages={},
                               latency_ms={"total": 1.0}, payload={"top_k": [{"index": 0, "label": "cat",
                                                                                "score": 0.9}]}) for i in range(5)]
        for r in results:
            sink.write(r)
        end = time.monotonic() + 10
        while time.monotonic() < end and "unreachable" not in caplog.text:
            time.sleep(0.05)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
        assert len(warnings) == 1 and f"127.0.0.1:{later.port}" in warnings[0].getMessage()
        assert sink.unacknowledged == 6  # 5 results + the state, queued
        later.start()
        assert sink.flush(15.0), "queued results were not acknowledged once the broker came up"
        assert sink.connects == 1
    finally:
        sink.close()
        later.stop()


def test_tls_and_credentials_and_the_password_is_never_logged(tiny_bundle, tmp_path, caplog) -> None:
    user, password = "camera", "s3cret-Pa55"
    ca, cert, key = write_server_pki(tmp_path)
    secured = Mosquitto(tmp_path / "secured", password_file=write_password_file(tmp_path, user, password),
                        tls=(ca, cert, key)).start()
    caplog.set_level(logging.DEBUG)
    try:
        good = MqttConfig(enabled=True, host="127.0.0.1", port=secured.port, username=user, password=password,
                          tls=True, ca_file=ca, discovery=False)
        sink = MqttSink(good, agent_id="tls-agent")
        assert sink.connected.wait(10.0), "TLS + credentials: no connection"
        sink.close()

        bad = MqttConfig(enabled=True, host="127.0.0.1", port=secured.port, username=user, password="wrong-Pa55",
                         tls=True, ca_file=ca, reconnect_initial_s=0.2, reconnect_max_s=0.2, close_timeout_s=0.0)
        refused = MqttSink(bad, agent_id="bad-agent")
        end = time.monotonic() + 10.0
        while time.monotonic() < end and "refused the connection" not in caplog.text:
            time.sleep(0.05)
        refused.close()
        assert not refused.connected.is_set()
        assert "refused the connection" in caplog.text and "mqtt.password" in caplog.text
        assert password not in repr(good) and "wrong-Pa55" not in repr(bad)
        for record in caplog.records:
            text = record.getMessage()
            assert password not in text and "wrong-Pa55" not in text
    finally:
        secured.stop()

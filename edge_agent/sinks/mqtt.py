"""Results over MQTT with Home Assistant discovery (paho-mqtt; imported only when enabled).

Topics (``base`` = ``{mqtt.topic_prefix}/{agent_id}``)::

    base/result        each result as the JSON line of edge_agent.results (or only changes)
    base/state         retained {"person": "ON"|"OFF", "label": ..., "score": ..., "cut": ...}
    base/availability  retained "online" / "offline" (also the broker's last will)
    {discovery_prefix}/binary_sensor/<node>/person/config      Home Assistant discovery,
    {discovery_prefix}/sensor/<node>/last_label/config         retained, sent on every connect

With ``mqtt.publish = "changes"`` a result goes out only when its top label changes, a
person appears or leaves, or it holds detections. Delivery: paho's network thread
connects in the background and reconnects with exponential backoff
(``reconnect_initial_s`` .. ``reconnect_max_s``); at QoS 1 or 2 every result published
while the broker is away stays queued in the client (up to ``max_queued``, then newer
ones are dropped and counted) and is resent on reconnect, so a broker restart loses
nothing. At QoS 0 results published while disconnected are lost. ``close`` publishes
"offline" and waits up to ``close_timeout_s`` for unacknowledged results.

The password goes to paho only; it never reaches a log line, a repr or an error message.
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import paho.mqtt.client as mqtt

from edge_agent.config_owner import MqttConfig
from edge_agent.results import FrameResult

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"


@dataclass(frozen=True)
class Summary:
    """What Home Assistant sees of one result: the top label and whether a person is in view."""

    label: str
    score: float
    person: bool
    detections: int

    def state(self, cut: str) -> dict:
        return {"person": ON if self.person else OFF, "label": self.label, "score": round(self.score, 4), "cut": cut}


def summarize(payload: dict, person_labels: Sequence[str], min_score: float) -> Summary:
    """The top label (of top-k or detections) and the person flag of a result payload (pure)."""
    entries = payload.get("detections")
    if entries is None:
        entries = payload.get("top_k") or []
    wanted = {p.lower() for p in person_labels}
    person = any(str(e.get("label", "")).lower() in wanted and float(e.get("score", 0.0)) >= min_score
                 for e in entries)
    if not entries:
        return Summary(label="error" if "error" in payload else "", score=0.0, person=False, detections=0)
    top = max(entries, key=lambda e: float(e.get("score", 0.0)))
    detections = len(entries) if "detections" in payload else 0
    return Summary(label=str(top.get("label", top.get("index", ""))), score=float(top.get("score", 0.0)),
                   person=person, detections=detections)


def is_change(previous: Optional[Summary], current: Summary) -> bool:
    """``publish = "changes"``: a new top label, a person appearing or leaving, or any detection."""
    if previous is None or current.detections > 0:
        return True
    return previous.label != current.label or previous.person != current.person


def discovery_messages(cfg: MqttConfig, agent_id: str, model: str) -> list[tuple[str, dict]]:
    """The Home Assistant discovery (topic, config) pairs for this agent."""
    base = f"{cfg.topic_prefix}/{agent_id}"
    node = "splitinfer_" + "".join(c if c.isalnum() else "_" for c in agent_id)
    device = {"identifiers": [node], "name": f"splitinfer {agent_id}", "manufacturer": "splitinfer", "model": model}
    common = {"state_topic": f"{base}/state", "availability_topic": f"{base}/availability",
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    person = {**common, "name": "Person detected", "unique_id": f"{node}_person", "device_class": "occupancy",
              "value_template": "{{ value_json.person }}", "payload_on": ON, "payload_off": OFF}
    label = {**common, "name": "Last label", "unique_id": f"{node}_last_label", "icon": "mdi:label",
             "value_template": "{{ value_json.label }}", "json_attributes_topic": f"{base}/state"}
    return [(f"{cfg.discovery_prefix}/binary_sensor/{node}/person/config", person),
            (f"{cfg.discovery_prefix}/sensor/{node}/last_label/config", label)]


class MqttSink:
    """A :class:`~edge_agent.results.ResultSink` publishing to an MQTT broker (see the module doc)."""

    def __init__(self, cfg: MqttConfig, *, agent_id: str, model: str = "") -> None:
        self.cfg = cfg
        self.agent_id = agent_id
        self.model = model
        self.base_topic = f"{cfg.topic_prefix}/{agent_id}"
        self.result_topic = f"{self.base_topic}/result"
        self.state_topic = f"{self.base_topic}/state"
        self.availability_topic = f"{self.base_topic}/availability"
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # mids awaiting the broker's acknowledgement (QoS >= 1)
        self._acked_early: set[int] = set()
        self._last: Optional[Summary] = None
        self._last_state: Optional[dict] = None
        self._warned_down = False
        self._client = self._build_client()
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        log.info("MQTT: publishing results to %s:%d under %s/ (QoS %d, %s)", cfg.host, cfg.port, self.base_topic,
                 cfg.qos, "every result" if cfg.publish == "all" else "changes and detections")

    def _build_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"splitinfer-{self.agent_id}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
            if cfg.cert_file is not None and cfg.key_file is not None:
                context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
            client.tls_set_context(context)
        client.max_queued_messages_set(cfg.max_queued)
        client.reconnect_delay_set(cfg.reconnect_initial_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            hint = " (check mqtt.username and mqtt.password)" if "authori" in str(reason).lower() else ""
            log.error("MQTT broker %s:%d refused the connection: %s%s", self.cfg.host, self.cfg.port, reason, hint)
            return
        self.connects += 1
        self._warned_down = False
        log.info("MQTT connected to %s:%d%s", self.cfg.host, self.cfg.port,
                 "" if self.connects == 1 else f" (reconnect {self.connects - 1})")
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        if self.cfg.discovery:
            self._publish_discovery(client)
            client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)  # Home Assistant restarted: resend
        with self._lock:
            state = self._last_state
        if state is not None:
            client.publish(self.state_topic, json.dumps(state), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected.clear()
        if self._warned_down:
            log.debug("MQTT still disconnected from %s:%d: %s", self.cfg.host, self.cfg.port, reason)
        else:
            self._warned_down = True
            log.warning("MQTT disconnected from %s:%d (%s); reconnecting with backoff up to %.0f s, results queued",
                        self.cfg.host, self.cfg.port, reason, self.cfg.reconnect_max_s)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if self._warned_down:
            log.debug("MQTT broker %s:%d still unreachable", self.cfg.host, self.cfg.port)
        else:
            self._warned_down = True
            log.warning("MQTT broker %s:%d unreachable (check mqtt.host/mqtt.port); retrying with backoff up to "
                        "%.0f s, results queued", self.cfg.host, self.cfg.port, self.cfg.reconnect_max_s)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            elif self.cfg.qos > 0:
                self._acked_early.add(mid)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == f"{self.cfg.discovery_prefix}/status" and message.payload == b"online":
            self._publish_discovery(client)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        for topic, config in discovery_messages(self.cfg, self.agent_id, self.model):
            client.publish(topic, json.dumps(config), qos=1, retain=True)

    # ------------------------------------------------------------------ ResultSink

    def write(self, result: FrameResult) -> None:
        summary = summarize(result.payload, self.cfg.person_labels, self.cfg.person_min_score)
        previous, self._last = self._last, summary
        if self.cfg.publish == "all" or is_change(previous, summary):
            self._publish(self.result_topic, result.to_line(), self.cfg.qos, self.cfg.retain)
        state = summary.state(result.cut)
        if self._last_state is None or {**state, "score": 0} != {**self._last_state, "score": 0}:
            with self._lock:
                self._last_state = state
            self._publish(self.state_topic, json.dumps(state), self.cfg.qos, True)

    def _publish(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            level = logging.WARNING if self.dropped == 1 else logging.DEBUG
            log.log(level, "MQTT queue full (mqtt.max_queued = %d): dropped a message on %s (%d dropped so far)",
                    self.cfg.max_queued, topic, self.dropped)
            return
        self.published += 1
        if qos > 0:
            with self._lock:
                if info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                else:
                    self._pending.add(info.mid)

    @property
    def unacknowledged(self) -> int:
        """Messages (QoS >= 1) published but not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged every message; True if it did within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.unacknowledged and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.unacknowledged == 0

    def close(self) -> None:
        if not self.flush(self.cfg.close_timeout_s):
            log.warning("MQTT: %d results not acknowledged by %s:%d after %.1f s; giving up", self.unacknowledged,
                        self.cfg.host, self.cfg.port, self.cfg.close_timeout_s)
        if self.connected.is_set():
            self._client.publish(self.availability_topic, "offline", qos=1, retain=True).wait_for_publish(1.0)
        self._client.disconnect()
        self._client.loop_stop()

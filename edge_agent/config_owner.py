"""The camera owner's sections of the edge config: ``[mqtt]`` (Home Assistant) and ``[liveview]``.

Both are off by default; :class:`edge_agent.config.EdgeConfig` holds them as ``mqtt`` and
``liveview``, loaded like every other section (``SPLITINFER_MQTT_HOST``, ``--set
liveview.enabled=true``). They validate themselves on construction; nothing here imports
paho or http.server.
"""
from __future__ import annotations

import ipaddress
import pathlib
from dataclasses import dataclass, field
from typing import Any, NoReturn, Optional

from edge_agent.errors import ConfigError

MQTT_PUBLISH_MODES = ("all", "changes")


def _fail(key: str, value: Any, expected: str) -> NoReturn:
    raise ConfigError(f"{key} = {value!r}: expected {expected}")


def _check_topic(key: str, topic: str) -> None:
    if not topic or any(c in topic for c in "#+\0") or topic.startswith("/") or topic.endswith("/"):
        _fail(key, topic, "an MQTT topic without wildcards (#, +) or a leading/trailing '/'")


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """Results over MQTT, with Home Assistant discovery (:mod:`edge_agent.sinks.mqtt`).

    Topics: ``{topic_prefix}/{agent_id}/result`` (every result, or only ``changes``: a new
    top label, a person appearing or leaving, any detection), ``.../state`` (retained:
    person ON/OFF and the last label, what the Home Assistant entities read) and
    ``.../availability`` (retained online/offline, the broker's last will).
    """

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    client_id: str = ""  # "" = "splitinfer-<agent_id>"
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    tls: bool = False
    ca_file: Optional[pathlib.Path] = None  # None with tls = the system's CAs
    cert_file: Optional[pathlib.Path] = None  # client certificate
    key_file: Optional[pathlib.Path] = None
    topic_prefix: str = "splitinfer"
    publish: str = "all"  # "all" results, or only "changes" and detections
    qos: int = 1
    retain: bool = False  # retain the result messages (state and discovery are always retained)
    keepalive_s: int = 30
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_queued: int = 10000  # results buffered while the broker is away; older ones are kept, newer dropped
    close_timeout_s: float = 5.0  # how long stop() waits for unacknowledged results
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    person_labels: tuple[str, ...] = ("person",)
    person_min_score: float = 0.5

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            _fail("mqtt.host", self.host, "a broker host name or address")
        if not 1 <= self.port <= 65535:
            _fail("mqtt.port", self.port, "a TCP port in 1..65535")
        if self.password is not None and self.username is None:
            _fail("mqtt.username", self.username, "a user name when mqtt.password is set")
        if (self.cert_file is None) != (self.key_file is None):
            _fail("mqtt.cert_file", self.cert_file, "mqtt.cert_file and mqtt.key_file given together")
        if (self.ca_file is not None or self.cert_file is not None) and not self.tls:
            _fail("mqtt.tls", self.tls, "true when mqtt.ca_file/cert_file are set")
        _check_topic("mqtt.topic_prefix", self.topic_prefix)
        _check_topic("mqtt.discovery_prefix", self.discovery_prefix)
        if self.publish not in MQTT_PUBLISH_MODES:
            _fail("mqtt.publish", self.publish, f"one of {list(MQTT_PUBLISH_MODES)}")
        if self.qos not in (0, 1, 2):
            _fail("mqtt.qos", self.qos, "0, 1 or 2")
        if not 5 <= self.keepalive_s <= 3600:
            _fail("mqtt.keepalive_s", self.keepalive_s, "seconds in 5..3600")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            _fail("mqtt.reconnect_initial_s", self.reconnect_initial_s,
                  f"0 < value <= mqtt.reconnect_max_s ({self.reconnect_max_s})")
        if not 1 <= self.max_queued <= 1_000_000:
            _fail("mqtt.max_queued", self.max_queued, "an integer in 1..1000000")
        if self.close_timeout_s < 0:
            _fail("mqtt.close_timeout_s", self.close_timeout_s, "seconds >= 0")
        if not 0.0 <= self.person_min_score <= 1.0:
            _fail("mqtt.person_min_score", self.person_min_score, "a score in 0..1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the live view needs no token there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class LiveViewConfig:
    """The live view (:mod:`edge_agent.liveview`): the camera with overlays, the decision,
    a timeline and the control buttons, served over HTTP by the agent.

    Bound to localhost by default; any other host requires ``control.token`` (the same
    bearer token as TCP control), checked by :func:`edge_agent.config.check_sections`.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8090  # 0 = any free port
    fps: float = 5.0  # frames per second streamed to each viewer
    jpeg_quality: int = 70
    max_width_px: int = 640  # larger frames are scaled down before drawing
    timeline_s: int = 300  # how much history the chart keeps (one point per second)

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            _fail("liveview.host", self.host, "a host name or address to bind, e.g. 127.0.0.1 or 0.0.0.0")
        if not 0 <= self.port <= 65535:
            _fail("liveview.port", self.port, "a TCP port in 0..65535 (0 = any free port)")
        if not 0 < self.fps <= 60:
            _fail("liveview.fps", self.fps, "frames per second in (0, 60]")
        if not 10 <= self.jpeg_quality <= 100:
            _fail("liveview.jpeg_quality", self.jpeg_quality, "a JPEG quality in 10..100")
        if not 64 <= self.max_width_px <= 4096:
            _fail("liveview.max_width_px", self.max_width_px, "pixels in 64..4096")
        if not 10 <= self.timeline_s <= 86400:
            _fail("liveview.timeline_s", self.timeline_s, "seconds in 10..86400")


@dataclass(frozen=True, kw_only=True)
class ExitsConfig:
    """The bundle's early exits (:mod:`edge_agent.exits`): ``enabled`` runs them after the head
    of a cut that has one; ``threshold`` 0 keeps each exit's calibrated threshold, a value in
    (0, 1] replaces them all (``splitctl exit-threshold`` changes it at run time)."""

    enabled: bool = True
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) \
                or not 0.0 <= self.threshold <= 1.0:
            _fail("exits.threshold", self.threshold, "0 (the bundle's calibrated thresholds) or a number in (0, 1]")

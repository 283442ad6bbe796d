"""Result sinks the configuration turns on beside the main one (``results.sink``).

Each lives in its own module and imports its library only when enabled: ``mqtt``
(paho-mqtt, Home Assistant discovery) and the live view (:mod:`edge_agent.liveview`,
http.server), which the daemon also ``attach``-es to itself once started.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.config import EdgeConfig
    from edge_agent.results import ResultSink


def configured_sinks(config: "EdgeConfig", *, agent_id: str, model: str,
                     cuts: Sequence[str] = ()) -> list["ResultSink"]:
    """The extra sinks ``config`` enables (none by default). ``cuts`` are the bundle's cut
    ids in order (the live view's buttons and chart)."""
    sinks: list[ResultSink] = []
    if config.mqtt.enabled:
        try:
            from edge_agent.sinks.mqtt import MqttSink
        except ImportError as exc:
            raise ConfigError("mqtt.enabled = true needs paho-mqtt: pip install 'splitinfer[edge]' "
                              f"(or pip install paho-mqtt) ({exc})") from exc
        sinks.append(MqttSink(config.mqtt, agent_id=agent_id, model=model))
    if config.liveview.enabled:
        from edge_agent.liveview import LiveView

        sinks.append(LiveView(config.liveview, token=config.control.token, codec=config.server.compression,
                              cuts=tuple(cuts)))
    return sinks

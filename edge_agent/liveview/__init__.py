"""The live view: the camera with its results, the decision, a timeline and control buttons.

Off by default (``liveview.enabled``); the daemon imports this package only when it is
on. :class:`~edge_agent.liveview.server.LiveView` is a result sink that the daemon
attaches to itself once started; ``overlay`` draws, ``timeline`` keeps the chart's
points, ``page`` is the HTML/JS.
"""
from __future__ import annotations

from edge_agent.liveview.server import LiveView

__all__ = ["LiveView"]

"""The edge frame path as small stages, each with one job.

One frame moves through them as a :class:`~edge_agent.stages.job.FrameJob`; the daemon
(:mod:`edge_agent.agent`) only runs them on its threads and queues::

    capture -> gate -> preprocess + head -> exit -> encode -> offload ─┐
                                     │                     │ failure   │
                                     └ "output" cut ───────┴> complete locally
                                                                       v
                                                  postprocess -> result -> sinks

* capture: the :class:`~edge_agent.sources.FrameSource` (the daemon's capture loop);
* gate (:mod:`.hooks`): :class:`FrameGate` decides whether a frame is worth computing at
  all (motion gating plugs in here; the default admits every frame);
* preprocess + head (:mod:`.compute`): the manifest's preprocessing and the head of the
  frame's cut on ONNX Runtime (:class:`~edge_agent.head.HeadRunner` holds the sessions);
* exit (:mod:`.hooks`): :class:`ExitCheck` may finish a frame right after its head
  (early exit plugs in here; the default never exits);
* encode (:mod:`.encode`): the wire codec of each cut tensor (:mod:`protos.wire`);
* offload (:mod:`.offload`): one request over the :class:`~edge_agent.types.Transport`;
* complete locally (:mod:`.local`): the local tail, else the full model;
* postprocess + result (:mod:`.result`): the payload and the :class:`FrameResult`, written
  to every sink of the list.

Stages never own threads, never read the policy, and report measurements only through
:class:`~edge_agent.feedback.Feedback`.
"""
from __future__ import annotations

from edge_agent.stages.compute import HeadStage
from edge_agent.stages.encode import WireEncoder
from edge_agent.stages.hooks import AdmitAll, ExitCheck, FrameGate, NeverExit
from edge_agent.stages.job import FrameJob
from edge_agent.stages.local import complete_on_device
from edge_agent.stages.offload import Offloader
from edge_agent.stages.result import ResultStage, assemble_result

__all__ = [
    "AdmitAll", "ExitCheck", "FrameGate", "FrameJob", "HeadStage", "NeverExit", "Offloader", "ResultStage",
    "WireEncoder", "assemble_result", "complete_on_device",
]

"""Partitioner: turns a model into a verified bundle of head/tail pairs.

Workstation-side only: a Pi or a server never imports it. What the other sides
share with it (the bundle format, preprocessing, wire tensors, settings) lives in
``protos``, the only first-party package it imports.

The modules, in the order ``splitinfer partition`` uses them:

* ``config``: :class:`PartitionConfig`, the frozen, self-checking request; ``cli`` builds it
  from flags, environment and TOML (``protos.settings``).
* ``loading``, ``graph``: read or export a model; prepare it (shapes, folding, order).
* ``cuts``, ``cut_names``, ``cut_selection``: enumerate valid cuts, name them, rank or resolve them.
* ``split``, ``verify``: cut a model into head and tail; check the pair in FP32.
* ``calibration``, ``evaluation``, ``fidelity``: real frames (calibration and held-out
  footage apart); running them; task-aware fidelity and the gate against the cloud-only
  JPEG baseline.
* ``ptq``, ``quantize``, ``codecs``: post-training INT8 quantization passes; INT8 heads under
  the gate with remedies, FP16 tails; the wire codec at the cut.
* ``profile``: latency on this machine.
* ``stages`` (the per-cut steps and the frozen values they pass), ``assemble`` (the
  manifest), ``pipeline`` (all of it, in order).
* ``report``, ``triton_export``, ``samples``, ``models``: output table and figure, Triton
  repository, sample media, the default MobileNetV2.
"""

"""Partitioner: turns a model into a verified bundle of head/tail pairs.

Workstation-side only: a Pi or a server never imports it. What the other sides
share with it (the bundle format, preprocessing, wire tensors) lives in ``protos``.
"""

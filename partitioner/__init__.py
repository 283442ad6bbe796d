"""Partitioner: turns a model into a verified bundle of head/tail pairs.

Importing this package is cheap and needs neither onnx nor torch: the edge agent
and the cloud server import :mod:`partitioner.bundle` and
:mod:`partitioner.preprocess` from here on machines that have only onnxruntime.
"""

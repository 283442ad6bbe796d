"""splitinfer: hybrid edge-cloud split inference.

The top floor: the command dispatcher (:mod:`splitinfer.cli`) and what composes
several sides at once (the end-to-end demo, :mod:`splitinfer.demo`). The three
products (``partitioner``, ``cloud_server``, ``edge_agent``) never import each
other or this package; they share only the contracts package ``protos``.
"""
from protos.version import package_version

__version__ = package_version()

"""splitinfer: hybrid edge-cloud split inference.

The distribution's own package holds only what every side shares: the command
dispatcher (:mod:`splitinfer.cli`) and the locator of sample media and weights
(:mod:`splitinfer.samples`).
"""
__version__ = "0.1.0"

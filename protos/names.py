"""Names every side agrees on: the two cuts every bundle holds.

* ``input``: nothing runs on the device; the frame travels as a JPEG and the server
  runs the whole model (cloud-only).
* ``output``: everything runs on the device (edge-only); nothing is sent.
"""
from __future__ import annotations

INPUT_CUT = "input"
OUTPUT_CUT = "output"
END_CUTS = (INPUT_CUT, OUTPUT_CUT)

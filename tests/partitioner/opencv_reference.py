"""OpenCV DNN's own run of SSD-MobileNetV2 (the independent reference for the detector tests).

Run as ``python -m tests.partitioner.opencv_reference PB PBTXT FRAMES.npy`` with an OpenCV 4
first on ``sys.path`` (OpenCV 5 dropped the TensorFlow importer; ``make opencv-reference``
installs opencv-python-headless 4.10 under ``.cache/opencv4``). FRAMES.npy holds RGB uint8
frames [F, 300, 300, 3] already resized; prints one JSON list per frame of
``[class id, score, x1, y1, x2, y2]`` (normalised) for every detection OpenCV keeps.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    import cv2

    pb, pbtxt, frames_path = argv
    net = cv2.dnn.readNetFromTensorflow(pb, pbtxt)
    frames = np.load(frames_path)
    result = []
    for rgb in frames:
        net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(rgb)))  # raw 0..255: the graph scales
        out = net.forward()[0, 0]  # [N, 7]: image, class, score, x1, y1, x2, y2
        result.append([[int(r[1]), float(r[2]), *map(float, r[3:7])] for r in out])
    print(json.dumps({"opencv": cv2.__version__, "frames": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

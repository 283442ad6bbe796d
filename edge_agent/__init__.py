"""Edge agent: the smart-camera daemon that runs bundle heads and offloads tails.

Needs only the ``edge`` extra (onnxruntime, OpenCV, grpcio, psutil, zeroconf);
never imports torch or onnx.
"""

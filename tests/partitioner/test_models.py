"""MobileNetV2 in plain torch with the shipped ImageNet weights, and its ONNX export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from partitioner.errors import ModelLoadError
from partitioner.loading import export_torch_module

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_weights_load_strictly_into_torchvision_names(mobilenet_v2_torch) -> None:
    import torch

    from partitioner.samples import mobilenet_v2_weights_path

    state = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    names = set(mobilenet_v2_torch.state_dict())
    assert names == set(state)
    assert "features.18.0.weight" in names and "classifier.1.weight" in names
    assert torch.equal(mobilenet_v2_torch.state_dict()["classifier.1.bias"], state["classifier.1.bias"])


def test_torch_model_classifies_chelsea_as_a_cat(mobilenet_v2_torch, imagenet_frames) -> None:
    import torch

    from partitioner.samples import imagenet_labels

    with torch.no_grad():
        logits = mobilenet_v2_torch(torch.from_numpy(imagenet_frames[0])).numpy()
    top1 = int(logits.argmax())
    assert top1 in CAT_CLASSES, f"chelsea classified as {top1} ({imagenet_labels()[top1]})"


def test_onnx_export_matches_torch_with_dynamic_batch(mobilenet_v2_torch, mobilenet_v2_model, imagenet_frames) -> None:
    import onnxruntime as ort
    import torch

    assert max(o.version for o in mobilenet_v2_model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch = np.concatenate(imagenet_frames[:2])
    session = ort.InferenceSession(mobilenet_v2_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: batch})
    with torch.no_grad():
        want = mobilenet_v2_torch(torch.from_numpy(batch)).numpy()
    assert got.shape == (2, 1000)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
    assert int(got[0].argmax()) in CAT_CLASSES


def test_export_rejects_old_opset() -> None:
    from partitioner.models.mobilenet_v2 import MobileNetV2

    with pytest.raises(ValueError, match="opset 13"):
        export_torch_module(MobileNetV2(), (1, 3, 224, 224), 13)


def test_export_failure_becomes_model_load_error() -> None:
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.reshape(7, -1, 5)  # fails for the declared input shape

    with pytest.raises(ModelLoadError, match="Broken"):
        export_torch_module(Broken(), (1, 3, 4, 4), 17)


def test_multi_output_module_exports_every_output_with_dynamic_batch() -> None:
    from tests.partitioner.conftest import build_small_torch_net

    model = export_torch_module(build_small_torch_net(), (1, 3, 32, 32), 17)
    outputs = [(o.name, o.type.tensor_type.shape.dim[0].dim_param) for o in model.graph.output]
    assert outputs == [("output_0", "batch"), ("output_1", "batch")]
    assert isinstance(model, onnx.ModelProto)

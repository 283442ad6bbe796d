"""The committed generated code is what the .proto files produce today."""
from __future__ import annotations

from protos import generate


def test_generated_modules_are_up_to_date() -> None:
    assert generate.main(["--check"]) == 0


def test_control_and_bundle_protos_import_side_by_side_with_tritonclient() -> None:
    from protos import bundle_pb2, control_pb2, inference_pb2
    import tritonclient.grpc  # noqa: F401  (defines the same inference.* names in the default pool)

    assert control_pb2.DESCRIPTOR.services_by_name["AgentControl"].full_name == "splitinfer.control.v1.AgentControl"
    assert bundle_pb2.Manifest.DESCRIPTOR.full_name == "splitinfer.bundle.v1.Manifest"
    assert inference_pb2.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"

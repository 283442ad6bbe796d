"""PartitionConfig: one frozen value whose defaults are defined once and that checks itself on construction."""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

from partitioner.config import DEFAULT_MODEL, PartitionConfig


def make(**overrides) -> PartitionConfig:
    return PartitionConfig(**{"model": "m.onnx", "out_dir": pathlib.Path("b"), **overrides})


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("wire_codec", "int4", "one of fp32, fp16, int8"),
    ("threshold", 0.0, "a fraction in (0, 1]"),
    ("threshold", 1.5, "a fraction in (0, 1]"),
    ("fidelity_frames", 0, ">= 1"),
    ("top_k", 0, ">= 1"),
    ("max_cuts", 1, ">= 2 (the input and output ends)"),
    ("threads", -1, ">= 0"),
    ("profile_warmup", -1, ">= 0"),
    ("jpeg_quality", 101, "1..100"),
    ("input_size", (224, 0), "(height, width), both > 0"),
    ("color_order", "RGBA", "'RGB' or 'BGR'"),
    ("model_name", "my model", "letters, digits"),
    ("cuts", ["a"], "a tuple"),
    ("out_dir", "b", "a pathlib.Path"),
])
def test_invalid_values_are_rejected_on_construction(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError) as exc:
        make(**{field: value})
    assert str(exc.value).startswith(f"{field}={value!r} is invalid; expected {expected}")


def test_mean_and_std_must_match() -> None:
    with pytest.raises(ValueError, match="mean/std"):
        make(mean=(0.5, 0.5, 0.5), std=(0.5,))
    with pytest.raises(ValueError, match="std > 0"):
        make(mean=(0.5,), std=(0.0,))


def test_is_frozen_and_names_the_bundle() -> None:
    config = make(model="/models/My Net v2.onnx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threads = 2  # type: ignore[misc]
    assert config.bundle_model_name == "My_Net_v2"
    assert make(model_name="tiny.v1").bundle_model_name == "tiny.v1"
    assert make(model=DEFAULT_MODEL).bundle_model_name == DEFAULT_MODEL
    assert make(input_size=(224, 224)).input_size == (224, 224)

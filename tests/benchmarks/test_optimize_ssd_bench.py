from __future__ import annotations

import pytest

from benchmarks.optimize_ssd_bench import ORIGINAL, fastest_variant, parse_energies


def _row(speedup: float, f1: float, passes: bool = True) -> dict:
    return {"speedup_1thread": speedup, "detection_f1": f1, "passes_gate": passes}


ROWS = {
    ORIGINAL: _row(1.0, 1.0),
    "lr90": _row(1.05, 0.93),
    "lr80": _row(1.10, 0.80, passes=False),
    "int8": _row(1.60, 0.95, passes=False),  # F1 high enough but a confident FP32 detection lost
    "lr90+int8": _row(1.70, 0.70, passes=False),
}


@pytest.mark.parametrize("min_f1, gate, want", [
    (0.92, False, "int8"),        # fastest whose F1 >= 0.92, gate ignored
    (0.92, True, "lr90"),         # the gate also needs every confident detection found
    (0.80, False, "int8"),
    (0.60, False, "lr90+int8"),
    (0.96, False, None),          # the original never counts, however faithful
    (0.0, True, "lr90"),
])
def test_fastest_variant_picks_the_fastest_that_qualifies(min_f1: float, gate: bool, want: str | None) -> None:
    assert fastest_variant(ROWS, min_f1, gate=gate) == want


def test_fastest_variant_keeps_the_first_of_a_tie() -> None:
    assert fastest_variant({"a": _row(1.2, 0.9), "b": _row(1.2, 0.9)}, 0.5) == "a"


@pytest.mark.parametrize("text, want", [("0.9", (0.9,)), ("0.9, 0.95,0.99", (0.9, 0.95, 0.99)), ("1", (1.0,))])
def test_parse_energies_reads_fractions(text: str, want: tuple[float, ...]) -> None:
    assert parse_energies(text) == want


@pytest.mark.parametrize("text, named", [("0", "0.0"), ("1.5", "1.5"), ("x", "'x'"), (",", "','")])
def test_parse_energies_names_the_bad_value(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_energies(text)

"""`splitinfer partition | profile | export-triton`: help, settings precedence, real runs and one-line errors."""
from __future__ import annotations

import pathlib

import onnx
import pytest

from protos import bundle as bundle_io
from partitioner import cli
from splitinfer import cli as top
from tests.partitioner.test_pipeline import tiny_model

TINY_FLAGS = ["--frames", "12", "--calibration-frames", "4", "--threshold", "0.5", "--runs", "2", "--max-cuts", "4",
              "--quiet"]


@pytest.fixture()
def model_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    return path


@pytest.mark.parametrize("command", ["partition", "profile", "export-triton"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        top.main([command, "--help"])
    assert exc.value.code == 0
    assert f"splitinfer {command}" in capsys.readouterr().out


def test_missing_model_is_one_line_error(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert top.main(["partition", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "nope.onnx" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_model_and_bad_values(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    assert top.main(["partition", str(bad), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "bad.onnx" in capsys.readouterr().err
    assert top.main(["partition", str(bad), "--out", str(tmp_path / "b"), "--threshold", "1.5"]) == 2
    assert "threshold=1.5" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_unknown_cut_reports_nearest_and_writes_nothing(model_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = model_path.parent / "bundle"
    assert top.main(["partition", str(model_path), "--out", str(out), "--cuts", "stem_rel", *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "'stem_rel' is not in the graph" in err and "stem_relu" in err
    assert sorted(p.name for p in model_path.parent.iterdir()) == ["tiny.onnx"]


def test_settings_precedence_flags_env_toml(tmp_path: pathlib.Path, model_path: pathlib.Path) -> None:
    toml = tmp_path / "split.toml"
    toml.write_text('[partition]\nthreads = 3\nwire_codec = "fp16"\nmax_cuts = 5\n')
    argv = [str(model_path), "--out", str(tmp_path / "b"), "--config", str(toml)]
    config, _, _ = cli.build_partition_config(argv, environ={})
    assert (config.threads, config.wire_codec, config.max_cuts) == (3, "fp16", 5)
    config, _, _ = cli.build_partition_config(argv, environ={"SPLITINFER_PARTITION_THREADS": "2"})
    assert config.threads == 2
    config, _, _ = cli.build_partition_config(argv + ["--threads", "1"], environ={"SPLITINFER_PARTITION_THREADS": "2"})
    assert config.threads == 1
    config, _, _ = cli.build_partition_config(argv + ["--cuts", "a+b,c"], environ={})
    assert config.cuts == ("a,b", "c")
    toml.write_text("[partition]\nthreads = 'many'\n")
    with pytest.raises(ValueError, match=r"split\.toml key 'threads': threads = 'many': expected an integer"):
        cli.build_partition_config(argv, environ={})
    toml.write_text("[partition]\nthred = 2\n")
    with pytest.raises(ValueError, match="unknown key 'thred'; did you mean 'threads'"):
        cli.build_partition_config(argv, environ={})


def test_partition_profile_and_export_end_to_end(model_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = model_path.parent
    png = root / "report.png"
    assert top.main(["partition", str(model_path), "--out", str(root / "bundle"), "--report-png", str(png), *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "input" in out and "output" in out and "head ms" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = bundle_io.read_bundle(root / "bundle")

    assert top.main(["profile", str(root / "bundle"), "--runs", "2", "--warmup", "1", "--device", "test-pi"]) == 0
    profiled = bundle_io.read_bundle(root / "bundle")
    assert profiled.content_hash == bundle.content_hash
    for cut in profiled.manifest.cuts:
        devices = [p.device for p in cut.edge_profiles]
        assert "test-pi" in devices and len(devices) == 2
    assert top.main(["profile", str(root / "bundle"), "--runs", "2", "--warmup", "1", "--device", "test-pi"]) == 0
    again = bundle_io.read_bundle(root / "bundle")
    assert all(len(c.edge_profiles) == 2 for c in again.manifest.cuts)

    assert top.main(["export-triton", str(root / "bundle"), "--out", str(root / "repo")]) == 0
    assert (root / "repo" / "README.md").is_file()
    assert top.main(["export-triton", str(root / "bundle"), "--out", str(root / "repo")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_profile_and_export_of_missing_bundle(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert top.main(["profile", str(tmp_path / "none")]) == 2
    assert "manifest.json" in capsys.readouterr().err
    assert top.main(["export-triton", str(tmp_path / "none"), "--out", str(tmp_path / "repo")]) == 2
    assert not (tmp_path / "repo").exists()


def test_profile_on_an_edge_only_copy(model_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Pi holds manifest.json and edge/ only; profiling must still write its profile."""
    import shutil

    root = model_path.parent
    assert top.main(["partition", str(model_path), "--out", str(root / "bundle"), *TINY_FLAGS]) == 0
    edge = root / "edge_copy"
    edge.mkdir()
    shutil.copy(root / "bundle" / "manifest.json", edge / "manifest.json")
    shutil.copytree(root / "bundle" / "edge", edge / "edge")
    assert top.main(["profile", str(edge), "--runs", "2", "--warmup", "1", "--device", "pi-zero"]) == 0
    profiled = bundle_io.read_bundle(edge, bundle_io.Side.EDGE)
    assert all("pi-zero" in [p.device for p in c.edge_profiles] for c in profiled.manifest.cuts)
    assert profiled.content_hash == bundle_io.read_bundle(root / "bundle").content_hash


def test_every_config_field_is_a_key_and_files_are_relative_to_the_toml(tmp_path: pathlib.Path,
                                                                        model_path: pathlib.Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "classes.txt").write_text("cat\ndog\n")
    toml = conf / "split.toml"
    toml.write_text('[partition]\nlabels = "classes.txt"\ninput_size = "40x48"\njpeg_quality = 70\n'
                    'mean = [0.5]\nstd = [0.25]\nreport_png = "fig.png"\ncuts = ["stem_relu", "a+b"]\n')
    argv = [str(model_path), "--out", str(tmp_path / "b"), "--config", str(toml)]
    config, report_png, _ = cli.build_partition_config(argv, environ={"SPLITINFER_PARTITION_TOP_K": "2"})
    assert config.labels == ("cat", "dog") and config.input_size == (40, 48) and config.jpeg_quality == 70
    assert (config.mean, config.std, config.top_k) == ((0.5,), (0.25,), 2)
    assert config.cuts == ("stem_relu", "a,b")
    assert report_png == conf / "fig.png"
    config, _, _ = cli.build_partition_config(argv + ["--input-size", "32x32", "--no-quantize"], environ={})
    assert config.input_size == (32, 32) and config.quantize_heads is False


@pytest.mark.parametrize(("extra", "environ", "message"), [
    (["--input-size", "32by32"], {}, "flag --input-size: input_size = '32by32': expected HxW, e.g. 224x224"),
    (["--threads", "two"], {}, "flag --threads: threads = 'two': expected an integer"),
    (["--labels", "missing.txt"], {}, "flag --labels: labels = 'missing.txt': "),
    ([], {"SPLITINFER_PARTITION_THREDS": "2"}, "environment variable SPLITINFER_PARTITION_THREDS: unknown key 'threds'"),
    ([], {"SPLITINFER_PARTITION_THRESHOLD": "1.5"}, "threshold=1.5 is invalid"),
])
def test_bad_settings_name_their_source(model_path: pathlib.Path, extra: list[str], environ: dict[str, str],
                                        message: str) -> None:
    argv = [str(model_path), "--out", str(model_path.parent / "b"), *extra]
    with pytest.raises(ValueError) as exc:
        cli.build_partition_config(argv, environ=environ)
    assert message in str(exc.value)


def test_help_reads_the_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from partitioner.config import PartitionConfig

    defaults = PartitionConfig(model="m.onnx", out_dir=pathlib.Path("b"))
    with pytest.raises(SystemExit):
        top.main(["partition", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase, value in (("including input/output", defaults.max_cuts),
                          ("for the fidelity measurement", defaults.fidelity_frames),
                          ("of the quantized pipeline with --gate absolute", defaults.threshold),
                              ("below the JPEG baseline", defaults.margin), ("timed runs per profile", defaults.profile_runs),
                          ("for INT8 quantization and the int8 wire", defaults.calibration_frames)):
        assert f"{phrase} (default {value})" in text, phrase

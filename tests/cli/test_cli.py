from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, main


def test_weights_list_names_milestones_and_their_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "missing" in out
    assert "efficientnet_lite0" in out and "ships in a Python package" in out


def test_weights_download_offline_fails_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["weights", "download", "squeezenet1_1", "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert "Could not download squeezenet1_1-" in err and "copy the file" in err
    assert not list(tmp_path.rglob("*.part")), "a failed download must not leave a partial file"


def test_unknown_model_download(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "download", "nonet"]) == 2
    assert "Unknown model 'nonet'" in capsys.readouterr().err


def test_serve_has_host_and_port() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)


def test_train_builtin_quick_writes_both_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train-builtin", "--quick", "--out", str(tmp_path)]) == 0
    for name in ("nodule-cnn", "digit-cnn"):
        for suffix in (".safetensors", ".json", ".md"):
            assert (tmp_path / f"{name}{suffix}").is_file()
    assert "held-out accuracy" in capsys.readouterr().out

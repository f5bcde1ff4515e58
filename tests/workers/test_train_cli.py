"""`actsearch train` (workers.train_cli.main): a run end to end, and the no-data message."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers import train_cli


def _tarball(path: Path, classes: int = 3, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for split, count in (("train", per_class), ("test", 4)):
            for c in range(classes):
                for i in range(count):
                    pixels = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                    pixels[:, :, c % 3] += 150  # a colour per class: learnable
                    raw = io.BytesIO()
                    Image.fromarray(pixels).save(raw, format="PNG")
                    info = tarfile.TarInfo(f"{split}/class{c}/{i}.png")
                    info.size = raw.tell()
                    raw.seek(0)
                    tar.addfile(info, raw)
    return path


def test_missing_data_exits_2_with_instructions_and_no_traceback(tmp_path, capsys) -> None:
    code = train_cli.main(
        ["--data", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "--data /path/to/cifar-root" in err and "ACTSEARCH_DATA" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "evaluation", "said"),
    [
        ([], {"weights": "raw", "tta": "none"}, "the net's own weights (no EMA), without TTA"),
        (
            ["--ema", '{"decay": 0.9, "start_epoch": 0}', "--tta", "flip"],
            {"weights": "ema", "tta": "flip"},
            "an EMA of the weights (decay 0.9), with flip TTA",
        ),
        (
            ["--tta", "flip_translate"],
            {"weights": "raw", "tta": "flip_translate"},
            "the net's own weights (no EMA), with flip_translate TTA",
        ),
    ],
    ids=["plain", "ema-tta", "tta2"],
)
def test_a_run_writes_its_record(
    tmp_path, capsys, options: list[str], evaluation: dict[str, str], said: str
) -> None:
    out = tmp_path / "out" / "record.json"
    argv = [
        "--model", "lenet", "--activation", "gelu", "--epochs", "2", "--width", "0.5",
        "--data", str(_tarball(tmp_path / "tiny.tar")), "--dataset", "folder",
        "--cache-dir", str(tmp_path / "cache"), "--val-size", "6", "--batch-size", "8",
        "--lr", "0.05", "--device", "cpu", "--seed", "3", "--json", str(out), "--quiet",
        *options,
    ]  # fmt: skip
    assert train_cli.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["epochs_done"] == 2 and record["manifest"]["seed"] == 3
    config = record["manifest"]["config"]
    assert config["training"]["batch_size"] == 8 and config["model"] == {
        "name": "lenet",
        "width": 0.5,
    }
    assert config["activation"] == {"family": "gelu"}
    assert len(record["activation_curves"]["final"]) == 4  # LeNet's four sites
    assert record["evaluation"] == evaluation
    printed = capsys.readouterr().out
    assert "val_acc" in printed and f"evaluated {said}\n" in printed


@pytest.mark.parametrize(
    ("ema", "message"),
    [
        ("1.5", "training.ema.decay: 1.5 is outside the domain [0, 1)"),
        ("fast", "--ema must be a decay such as 0.999"),
        ('{"decay": 0.9,', "--ema must be a decay such as 0.999"),
        ('{"decay": 0.9, "power": 2}', "training.ema: unknown keys power"),
        ('{"start_epoch": 5}', "ema.start_epoch (5) must be below epochs (2)"),
    ],
)
def test_a_bad_ema_exits_2_before_loading_any_data(
    tmp_path, capsys, ema: str, message: str
) -> None:
    argv = ["--data", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path), "--epochs", "2",
            "--device", "cpu", "--ema", ema]  # fmt: skip
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "ACTSEARCH_DATA" not in err and "Traceback" not in err


def test_activation_option_accepts_json() -> None:
    value = train_cli.activation_config('{"family": "smu", "params": {"mu": 2.0}}')
    assert value == {"family": "smu", "params": {"mu": 2.0}}
    with pytest.raises(ValueError, match="family"):
        train_cli.activation_config('{"params": {}}')


def test_grad_clip_reaches_the_config_and_a_bad_one_exits_2(tmp_path, capsys) -> None:
    argv = ["--data", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path), "--epochs", "2",
            "--device", "cpu"]  # fmt: skip
    parser = train_cli.build_parser()
    config = train_cli.trial_config(parser.parse_args([*argv, "--grad-clip", "2.5"]))
    assert config["training"]["grad_clip"] == 2.5
    assert train_cli.main([*argv, "--grad-clip", "0"]) == 2
    err = capsys.readouterr().err
    assert "grad_clip" in err and "Traceback" not in err


def test_tta_choices_are_the_trainers() -> None:
    from search_space.contract.training import TTA_MODES

    assert train_cli.TTA_CHOICES == TTA_MODES

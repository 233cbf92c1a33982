"""What a user meets at the command line beyond each verb's own job (issue #24): the app's person-crop warning,
help on every option, and output that a pipe keeps apart from the progress bars."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import person
from PIL import Image

from reid_core.cli import main as cli

BLANK_WARNING = "does not look like a person crop (nearly uniform: one flat colour)"


@pytest.fixture
def crops(tmp_path: Path) -> tuple[Path, Path]:
    """A blank white image and a person-like crop, in a folder of their own."""
    folder = tmp_path / "crops"
    folder.mkdir()
    blank, crop = folder / "blank_white.png", folder / "person.png"
    Image.new("RGB", (64, 128), "white").save(blank)
    person(1, 0, 0).resize((64, 128)).save(crop)
    return blank, crop


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line]


def test_cli_warns_as_the_app_does(crops: tuple[Path, Path], tiny_weights: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    """A blank white image gets one warning line on stderr from every verb that takes an image, and its answer
    all the same on stdout; a person-like crop gets none."""
    blank, crop = crops
    weights = ["--weights", str(tiny_weights)]
    assert cli(["compare", str(blank), str(crop), *weights]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("probability ") and warnings(err) == [
        f"warning: {blank}: {BLANK_WARNING}, so this verdict means little"]
    assert cli(["compare", str(crop), str(crop), *weights]) == 0
    assert warnings(capsys.readouterr().err) == []

    assert cli(["uploads", str(blank), str(crop)]) == 0
    out, err = capsys.readouterr()
    assert "2 usable image(s), 0 skipped" in out and warnings(err) == [f"warning: {blank.name}: {BLANK_WARNING}"]

    gallery = ["--gallery", str(tmp_path / "g.sqlite"), *weights]
    assert cli(["gallery", "add", *gallery, str(blank), str(crop)]) == 0
    out, err = capsys.readouterr()
    assert "added 2" in out and warnings(err) == [f"- warning {blank.name}: {BLANK_WARNING}"]

    assert cli(["embed", str(blank.parent), "--out", str(tmp_path / "e.safetensors"), *weights]) == 0
    out, err = capsys.readouterr()
    assert "embedded 2 images (0 skipped)" in out and warnings(err) == [f"warning: {blank}: {BLANK_WARNING}"]

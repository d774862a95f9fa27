from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from control_plane.compiler.sources import InputSpec, check_data, load_labels, load_npz
from control_plane.errors import InvalidInput

SPEC = [InputSpec("input", (-1, 64))]


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_good_data_is_cast_to_float32(tmp_path: Path) -> None:
    path = _npz(tmp_path, whatever=np.zeros((5, 64), dtype=np.float64))
    checked = check_data(load_npz(path, "calibration"), SPEC, "calibration", path)
    assert list(checked) == ["input"]
    assert checked["input"].dtype == np.float32


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 65), np.float32), r"shape \[5, 65\], the model takes \[N, 64\]"),
        (np.zeros((5, 8, 8), np.float32), r"shape \[5, 8, 8\]"),
        (np.zeros((5, 64), np.int64), "dtype int64, the model takes floating point"),
        (np.zeros((0, 64), np.float32), "has no rows"),
    ],
)
def test_bad_data_is_named(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = _npz(tmp_path, input=array)
    with pytest.raises(InvalidInput, match=message) as info:
        check_data(load_npz(path, "calibration"), SPEC, "calibration", path)
    assert "calibration data" in str(info.value) and "'input'" in str(info.value)


def test_nan_is_counted(tmp_path: Path) -> None:
    array = np.zeros((5, 64), np.float32)
    array[1, 3] = np.nan
    array[2, 0] = np.inf
    path = _npz(tmp_path, input=array)
    with pytest.raises(InvalidInput, match="'input' contains 2 NaN or infinite values"):
        check_data(load_npz(path, "calibration"), SPEC, "calibration", path)


def test_missing_input_and_unreadable_files(tmp_path: Path) -> None:
    spec = [InputSpec("a", (-1, 2)), InputSpec("b", (-1, 2))]
    path = _npz(tmp_path, a=np.zeros((3, 2), np.float32))
    with pytest.raises(InvalidInput, match=r"no array for model input\(s\) b"):
        check_data(load_npz(path, "validation"), spec, "validation", path)
    text = tmp_path / "notes.npz"
    text.write_text("not numpy")
    with pytest.raises(InvalidInput, match="not a numpy .npz/.npy file"):
        load_npz(text, "validation")
    with pytest.raises(InvalidInput, match="no such file"):
        load_npz(tmp_path / "absent.npz", "validation")
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="objects.npy"):
        load_npz(pickled, "validation")


def test_labels_must_match_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, labels=np.arange(4))
    assert load_labels(path, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(InvalidInput, match="4 labels for 5 validation rows"):
        load_labels(path, 5)

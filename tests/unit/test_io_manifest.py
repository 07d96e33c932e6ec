import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data import decode
from helpers.data import manifest as mf
from helpers.run import store


def _write(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        p = folder / r["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30), 100, np.uint8)).save(p)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)


def test_read_manifest_ok(tmp_path):
    _write(tmp_path, [{"path": "a/x.png", "split_role": "classify", "label": "covid", "source": "s",
                       "patient_id": "p1"}])
    df = mf.read_manifest(tmp_path)
    assert list(df.columns[:len(mf.COLUMNS)]) == mf.COLUMNS and len(df) == 1


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(mf.ManifestError, match=str(tmp_path / "manifest.csv")):
        mf.read_manifest(tmp_path)


def test_bad_rows_are_named(tmp_path):
    _write(tmp_path, [{"path": "x.png", "split_role": "classify", "label": "maybe", "source": "s",
                       "patient_id": "p"}])
    pd.DataFrame([{"path": "x.png", "split_role": "classify", "label": "maybe", "source": "s",
                   "patient_id": "p"}, {"path": "gone.png", "split_role": "classify", "label": "normal",
                                        "source": "s", "patient_id": "q"}]).to_csv(tmp_path / "manifest.csv",
                                                                                   index=False)
    with pytest.raises(mf.ManifestError) as e:
        mf.read_manifest(tmp_path)
    msg = str(e.value)
    assert "label not in" in msg and "line 2: x.png" in msg
    assert "does not exist" in msg and "gone.png" in msg


def test_missing_column(tmp_path):
    pd.DataFrame([{"path": "x.png"}]).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(mf.ManifestError, match="missing column"):
        mf.read_manifest(tmp_path)


def test_write_manifest_refuses_to_overwrite(tmp_path):
    df = pd.DataFrame([{"path": "x.png", "split_role": "segment", "source": "s", "patient_id": "p",
                        "mask_path": "m.png"}])
    mf.write_manifest(df, tmp_path)
    with pytest.raises(FileExistsError):
        mf.write_manifest(df, tmp_path)


def test_read_image_modes_and_errors(tmp_path):
    a16 = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    Image.fromarray(a16).save(tmp_path / "16.png")
    g = decode.read_image(tmp_path / "16.png")
    assert g.dtype == np.uint8 and g.min() == 0 and g.max() == 255
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert decode.read_image(tmp_path / "rgb.png").shape == (5, 5)
    with pytest.raises(decode.ImageError, match="mode RGB"):
        decode.read_image(tmp_path / "rgb.png", require_8bit=True)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(decode.ImageError, match="bad.png: unreadable"):
        decode.read_image(tmp_path / "bad.png")
    with pytest.raises(decode.ImageError, match="not found"):
        decode.read_image(tmp_path / "nope.png")


def test_square_pads_centred_then_resizes():
    img = np.full((10, 20), 255, np.uint8)
    s = decode.square(img, 20)
    assert s.shape == (20, 20) and s[0].sum() == 0 and s[10, 10] == 255
    assert decode.square(img, 8).shape == (8, 8)


def test_atomic_writes(tmp_path):
    store.save_json({"a": np.int64(3)}, tmp_path / "x.json")
    assert store.load_json(tmp_path / "x.json") == {"a": 3}
    store.save_npy(np.arange(3), tmp_path / "x.npy")
    assert list(store.load_npy(tmp_path / "x.npy")) == [0, 1, 2]
    assert not list(tmp_path.glob(".*tmp"))

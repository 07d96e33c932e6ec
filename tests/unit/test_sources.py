"""Source adapters (helpers.data.sources; paper 3.1 / Table 2, 3.2) on fixtures and on real metadata."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import source_fixtures as fx  # noqa: E402

from helpers.data import sources as S  # noqa: E402
from helpers.data.manifest import COLUMNS, validate  # noqa: E402
from helpers.paths import find_shared_data, shared_metadata_dir  # noqa: E402


def flow_counts(res: S.AdapterResult) -> list[tuple[str, int, int]]:
    return [(r.step, r.n_in, r.n_kept) for r in res.flow.itertuples()]


def reasons(res: S.AdapterResult) -> dict[str, str]:
    """source_path -> exclusion reason."""
    return dict(zip(res.excluded["source_path"], res.excluded["reason"]))


def check_accounting(res: S.AdapterResult) -> None:
    """Every row is either kept or excluded with a reason; flow arithmetic adds up."""
    f = res.flow
    assert (f["n_in"] - f["n_kept"] == f["n_removed"]).all()
    assert (f["n_in"].iloc[1:].to_numpy() == f["n_kept"].iloc[:-1].to_numpy()).all()
    assert f["n_kept"].iloc[-1] == len(res.manifest)
    assert f["n_removed"].sum() == len(res.excluded)
    assert f["n_in"].iloc[0] == len(res.manifest) + len(res.excluded)
    assert (res.excluded["reason"] != "").all()
    assert list(res.manifest.columns[: len(COLUMNS)]) == COLUMNS
    validate(res.manifest, check_files=False)


# ----------------------------------------------------------------------------------------------
# image checks


@pytest.mark.parametrize("kind, expected", [
    ("gray", None), ("gray_jpg", None), ("rgb_gray", None), ("rgba_gray", None),
    ("rgb_colour", "not 8-bit grayscale: mode RGB (colour content)"),
    ("gray16", "not 8-bit grayscale: mode I;16"),
    ("bilevel", "not 8-bit grayscale: mode 1 (bilevel)"),
    ("none", "missing file"),
])
def test_check_image(tmp_path, kind, expected):
    p = fx.write_image(tmp_path / f"x.{'jpg' if kind == 'gray_jpg' else 'png'}", kind)
    assert S.check_image(p) == expected


def test_check_image_corrupt_and_notes(tmp_path):
    bad = fx.write_image(tmp_path / "bad.png", "corrupt")
    assert S.check_image(bad).startswith("unreadable image")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(fx.write_image(tmp_path / "full.png", "gray").read_bytes()[:200])
    assert S.check_image(trunc).startswith("unreadable image")  # PNG CRC pass catches truncation
    info = S.inspect_image(fx.write_image(tmp_path / "rgb.png", "rgb_gray"))
    assert info.ok and "gray content" in info.note
    deep = fx.write_image(tmp_path / "d.png", "gray16")
    assert S.check_image(deep, allow_16bit=True) is None
    assert "rescaled" in S.inspect_image(deep, allow_16bit=True).note


# ----------------------------------------------------------------------------------------------
# classification sources on fixtures


def test_ieee8023_fixture(tmp_path):
    root = fx.build_ieee8023(tmp_path / "ieee")
    res = S.adapt_ieee8023(root)
    check_accounting(res)
    assert flow_counts(res) == [
        ("source rows", 14, 14), ("modality X-ray", 14, 13), ("finding", 13, 12),
        ("frontal view", 12, 11), ("adult", 11, 10), ("file named", 10, 10),
        ("one row per file", 10, 9), ("image check", 9, 5), ("kept", 5, 5)]
    assert reasons(res) == {
        "volumes/c6.nii.gz": "modality CT",
        "images/s8.png": "other finding: Pneumonia/Bacterial/Streptococcus",
        "images/c5.png": "not frontal: view L",
        "images/c7.png": "child: age 12",
        "images/c1.png": "duplicate row for a file listed earlier",
        "images/missing9.png": "missing file",
        "images/corrupt10.png": res.excluded.set_index("source_path").loc["images/corrupt10.png", "reason"],
        "images/colour11.png": "not 8-bit grayscale: mode RGB (colour content)",
        "images/deep12.png": "not 8-bit grayscale: mode I;16",
    }
    assert reasons(res)["images/corrupt10.png"].startswith("unreadable image")
    m = res.manifest.set_index("source_path")
    assert m["label"].to_dict() == {"images/c1.png": "covid", "images/c2.jpg": "covid",
                                    "images/c3.png": "covid", "images/n4.png": "normal",
                                    "images/c13.png": "covid"}
    assert m.loc["images/c1.png", "patient_id"] == "ieee-1"
    assert m.loc["images/c1.png", "license"] == "CC BY"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in res.manifest["path"])
    assert res.root == root.resolve()
    notes = dict(zip(res.notes["source_path"], res.notes["note"]))
    assert notes["images/c2.jpg"] == "age not stated (kept)"
    assert "mode RGB with gray content" in notes["images/c3.png"]
    # the 16-bit image is kept (with a note) when asked for
    res16 = S.adapt_ieee8023(root, allow_16bit=True)
    assert len(res16.manifest) == 6 and "images/deep12.png" in set(res16.notes["source_path"])
    # metadata-only: nothing opened, only metadata filters
    meta_only = S.adapt_ieee8023(root, check_images=False)
    assert flow_counts(meta_only)[-2:] == [("image check", 9, 9), ("kept", 9, 9)]
    # a relative manifest for a folder
    rel = res.relative_manifest(root)
    assert set(rel["path"]) == set(m.index)


def test_figure1_fixture_cp1252_and_patient_suffix(tmp_path):
    root = fx.build_figure1(tmp_path / "fig1")
    res = S.adapt_figure1(root)
    check_accounting(res)
    assert flow_counts(res) == [
        ("source rows", 8, 8), ("modality X-ray", 8, 8), ("finding", 8, 6), ("frontal view", 6, 5),
        ("adult", 5, 5), ("file named", 5, 5), ("image file found", 5, 4), ("one row per file", 4, 4),
        ("image check", 4, 4), ("kept", 4, 4)]
    ex = dict(zip(res.excluded["row_id"], res.excluded["reason"]))
    assert ex == {"metadata.csv:3": "finding not stated", "metadata.csv:7": "other finding: Pneumonia",
                  "metadata.csv:9": "not frontal: view L",
                  "metadata.csv:8": "missing file: no images/COVID-00006.<ext>"}
    m = res.manifest.set_index("source_path")
    assert m["patient_id"].to_dict() == {
        "images/COVID-00001.jpg": "fig1-COVID-00001", "images/COVID-00003a.png": "fig1-COVID-00003",
        "images/COVID-00003b.PNG": "fig1-COVID-00003", "images/COVID-00004.jpeg": "fig1-COVID-00004"}
    assert m.loc["images/COVID-00004.jpeg", "label"] == "normal"
    assert m.loc["images/COVID-00001.jpg", "sex"] == "M"
    assert (res.notes["note"] == "view not stated (kept)").sum() == 2


def test_actualmed_fixture_imagename(tmp_path):
    root = fx.build_actualmed(tmp_path / "am")
    res = S.adapt_actualmed(root)
    check_accounting(res)
    assert [c for _, _, c in flow_counts(res)] == [5, 5, 4, 4, 4, 4, 4, 4, 3, 3]
    assert reasons(res) == {"images/CR.3.png": "finding not stated", "images/DX.5.png": "missing file"}
    assert sorted(res.manifest["patient_id"]) == ["actualmed-ANON1", "actualmed-ANON1", "actualmed-ANON3"]
    assert "mode RGBA with gray content (alpha dropped)" in res.notes["note"].iloc[-1]


def test_nih_fixture(tmp_path):
    root = fx.build_nih(tmp_path / "nih")
    res = S.adapt_nih(root)
    check_accounting(res)
    assert flow_counts(res) == [
        ("source rows", 7, 7), ("No Finding", 7, 5), ("adult", 5, 4), ("frontal view", 4, 4),
        ("random selection", 4, 4), ("one row per file", 4, 4), ("image check", 4, 3), ("kept", 3, 3)]
    assert reasons(res) == {
        "images_001/images/00000001_001.png": "finding: Cardiomegaly",
        "images_002/images/00000006_000.png": "finding: Effusion|Infiltration",
        "images_001/images/00000002_000.png": "child: age 12",
        "images/00000004_000.png": "missing file"}  # not found in any images folder
    m = res.manifest.set_index("patient_id")
    assert m.loc["nih-00000003", "source_path"] == "images_002/images/00000003_000.png"
    assert set(m["view"]) == {"PA", "AP"} and set(m["label"]) == {"normal"}
    sampled = S.adapt_nih(root, n_sample=2, seed=0)
    check_accounting(sampled)
    assert ("random selection", 4, 2) in flow_counts(sampled)
    again = S.adapt_nih(root, n_sample=2, seed=0)
    assert sampled.manifest["path"].tolist() == again.manifest["path"].tolist()


@pytest.mark.parametrize("inner", [False, True])
def test_chexpert_fixture(tmp_path, inner):
    root = fx.build_chexpert(tmp_path / "cx")
    res = S.adapt_chexpert(root / "CheXpert-v1.0-small" if inner else root)
    check_accounting(res)
    assert flow_counts(res) == [
        ("source rows", 8, 8), ("frontal view", 8, 7), ("No Finding", 7, 6), ("adult", 6, 5),
        ("no support devices", 5, 4), ("random selection", 4, 4), ("one row per file", 4, 4),
        ("image check", 4, 3), ("kept", 3, 3)]
    r = dict(zip(res.excluded["row_id"], res.excluded["reason"]))
    assert r == {"train.csv:3": "not frontal: Lateral", "train.csv:4": "No Finding = blank",
                 "train.csv:5": "child: age 18", "train.csv:6": "Support Devices = 1",
                 "train.csv:8": "missing file"}
    assert sorted(res.manifest["patient_id"]) == ["chexpert-patient00001", "chexpert-patient00005",
                                                  "chexpert-patient64541"]
    assert set(res.manifest["sex"]) == {"F", "M"}


# ----------------------------------------------------------------------------------------------
# segmentation sources on fixtures


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_montgomery_fixture_masks_merged_outside_source(tmp_path):
    root = fx.build_montgomery(tmp_path / "mcu")
    before = _tree(root)
    derived = tmp_path / "derived"
    res = S.adapt_montgomery(root, derived)
    check_accounting(res)
    assert flow_counts(res) == [("source rows", 3, 3), ("lung mask present", 3, 2),
                                ("one row per file", 2, 2), ("image check", 2, 2),
                                ("mask merged", 2, 2), ("kept", 2, 2)]
    assert reasons(res) == {"CXR_png/MCUCXR_0003_0.png":
                            "no lung mask: missing ManualMask/rightMask/MCUCXR_0003_0.png"}
    assert _tree(root) == before  # nothing written into the source
    w, h = fx.SEG_SIZE
    for row in res.manifest.itertuples():
        assert row.split_role == "segment" and row.label == "" and row.source == "montgomery"
        mp = Path(row.mask_path)
        assert mp.parent == derived.resolve() / "montgomery" / "masks"
        with Image.open(mp) as im:
            assert im.mode == "L" and im.size == (w, h)
            m = np.asarray(im)
        assert set(np.unique(m)) == {0, 255}
        expect = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in (fx.LEFT_BOX, fx.RIGHT_BOX):
            expect[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
        assert ((m > 0) == expect).all()  # OR of left and right (also for the 0/1-valued mask)
    m = res.manifest.set_index("patient_id")
    assert m.loc["montgomery-MCUCXR_0001_0", ["sex", "age"]].tolist() == ["M", "45"]
    with pytest.raises(ValueError, match="inside the source folder"):
        S.adapt_montgomery(root, root / "derived")
    with pytest.raises(ValueError, match="derived_dir"):
        S.adapt_montgomery(root, None)


def test_shenzhen_fixture(tmp_path):
    root = fx.build_shenzhen(tmp_path / "shz")
    res = S.adapt_shenzhen(root, tmp_path / "derived")
    check_accounting(res)
    assert flow_counts(res) == [("source rows", 5, 5), ("lung mask present", 5, 4),
                                ("one row per file", 4, 4), ("image check", 4, 4),
                                ("mask merged", 4, 3), ("kept", 3, 3)]
    w, h = fx.SEG_SIZE
    assert reasons(res) == {
        "CXR_png/CHNCXR_0002_1.png": "no lung mask: missing mask/CHNCXR_0002_1_mask.png",
        "CXR_png/CHNCXR_0004_1.png": f"mask size {h}x{w} does not match image size {w}x{h}"}
    assert res.manifest.set_index("patient_id")["source"].to_dict() == {
        "shenzhen-CHNCXR_0001_0": "shenzhen", "shenzhen-CHNCXR_0003_0": "shenzhen",
        "montgomery-MCUCXR_0005_0": "montgomery"}
    assert res.notes["note"].str.contains(f"resized {w // 2}x{h // 2} -> {w}x{h}").sum() == 1
    m = res.manifest.set_index("patient_id")
    assert m.loc["shenzhen-CHNCXR_0001_0", ["sex", "age"]].tolist() == ["M", "35"]
    for mp in res.manifest["mask_path"]:
        with Image.open(mp) as im:
            assert im.size == (w, h) and set(np.unique(np.asarray(im))) == {0, 255}


def test_jsrt_fixture(tmp_path):
    root = fx.build_jsrt(tmp_path / "jsrt")
    res = S.adapt_jsrt(root, tmp_path / "derived")
    check_accounting(res)
    assert [c for _, _, c in flow_counts(res)] == [2, 1, 1, 1, 1, 1]
    assert reasons(res) == {"images/JPCNN002.png": "no lung mask: missing masks/right_lung/JPCNN002.png"}
    row = res.manifest.iloc[0]
    assert row.patient_id == "jsrt-JPCLN001" and row.source == "jsrt-scr"
    with Image.open(row.mask_path) as im:
        assert im.size == (128, 128)
        assert set(np.unique(np.asarray(im))) == {0, 255}
    assert res.notes["note"].str.contains("resized 64x64 -> 128x128").all()


# ----------------------------------------------------------------------------------------------
# manifest folders, layout checks, detection, curation


def test_manifest_fixture(tmp_path):
    root = fx.build_manifest_folder(tmp_path / "man")
    res = S.adapt_manifest(root)
    check_accounting(res)
    assert len(res.manifest) == 3
    assert all(Path(p).is_file() for p in res.manifest["path"])
    assert Path(res.manifest.loc[2, "mask_path"]).is_file()
    assert res.manifest.loc[1, "source_path"] == "b.png"  # provenance kept
    assert "gray content" in res.notes["note"].iloc[0]


def test_verify_layout_messages(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(S.SourceLayoutError) as e:
        S.verify_layout("ieee8023", empty)
    msg = str(e.value)
    assert "missing metadata.csv" in msg and "Expected layout" in msg
    assert "https://github.com/ieee8023/covid-chestxray-dataset" in msg and "git clone" in msg
    (empty / "metadata.csv").write_text("patientid\n")
    with pytest.raises(S.SourceLayoutError, match="missing images/"):
        S.adapt_ieee8023(empty)
    with pytest.raises(S.SourceLayoutError, match="Data_Entry_2017"):
        S.adapt_nih(empty)
    with pytest.raises(S.SourceLayoutError, match="nihcc.app.box.com"):
        S.verify_layout("nih", empty)
    root = fx.build_montgomery(tmp_path / "mcu")
    for f in (root / "ManualMask" / "rightMask").iterdir():
        f.unlink()
    (root / "ManualMask" / "rightMask").rmdir()
    with pytest.raises(S.SourceLayoutError, match="ManualMask/rightMask/"):
        S.adapt_montgomery(root, tmp_path / "d")
    with pytest.raises(S.SourceLayoutError, match="does not exist"):
        S.verify_layout("chexpert", tmp_path / "nowhere")
    with pytest.raises(KeyError, match="unknown source"):
        S.get_source("nope")


def test_registry_complete():
    table = S.registry_table()
    assert set(table["name"]) == {"ieee8023", "figure1", "actualmed", "nih-cxr8", "chexpert",
                                  "montgomery", "shenzhen", "jsrt-scr", "manifest"}
    assert (table["homepage"] != "").all() and (table["instructions"] != "").all()
    assert (table["licence"] != "").all() and (table["layout"] != "").all()
    assert S.get_source("NIH").name == "nih-cxr8" and S.get_source("jsrt").name == "jsrt-scr"
    assert set(S.ADAPTERS) == set(S.SOURCES)


def test_detect_and_curate(tmp_path):
    roots = {"ieee8023": fx.build_ieee8023(tmp_path / "ieee"),
             "figure1": fx.build_figure1(tmp_path / "fig1"),
             "actualmed": fx.build_actualmed(tmp_path / "am"),
             "nih-cxr8": fx.build_nih(tmp_path / "nih"),
             "chexpert": fx.build_chexpert(tmp_path / "cx"),
             "montgomery": fx.build_montgomery(tmp_path / "mcu"),
             "shenzhen": fx.build_shenzhen(tmp_path / "shz"),
             "jsrt-scr": fx.build_jsrt(tmp_path / "jsrt"),
             "manifest": fx.build_manifest_folder(tmp_path / "man")}
    for name, root in roots.items():
        assert S.detect_source(root) == name
    with pytest.raises(ValueError, match="cannot tell"):
        S.detect_source(tmp_path)
    auto = S.load_source("auto", roots["nih-cxr8"])
    assert auto.source == "nih-cxr8" and len(auto) == 3
    picked = {k: roots[k] for k in ("ieee8023", "nih-cxr8", "chexpert", "montgomery", "jsrt-scr")}
    cur = S.curate(picked, tmp_path / "derived", options={"nih-cxr8": {"n_sample": 2}})
    nih = cur.flow[cur.flow["source"] == "nih-cxr8"].set_index("step")
    assert nih.loc["random selection", "n_kept"] == 2  # drawn before the image check
    assert cur.root is None and len(cur) == 5 + nih.loc["kept", "n_kept"] + 3 + 2 + 1
    assert cur.flow.groupby("source")["n_removed"].sum().sum() == len(cur.excluded)
    assert set(cur.flow["source"]) == {"ieee8023", "nih-cxr8", "chexpert", "montgomery", "jsrt-scr"}
    counts = cur.counts().set_index(["split_role", "label", "source"])["images"]
    assert counts[("classify", "covid", "ieee8023")] == 4 and counts[("classify", "normal", "chexpert")] == 3
    assert cur.exclusion_counts()["n"].sum() == len(cur.excluded)


# ----------------------------------------------------------------------------------------------
# real data (skipped when absent)

META = shared_metadata_dir()
needs_meta = pytest.mark.skipif(META is None, reason="shared metadata (../shared/data/metadata) not found; "
                                "set CXR_DATA_DIR or place the shared data next to the repository")
SHARED = find_shared_data()


@pytest.mark.realdata
@pytest.mark.skipif(SHARED is None, reason="shared real data (manifest.csv) not found; set CXR_DATA_DIR")
def test_real_manifest_folder():
    res = S.adapt_manifest(SHARED)
    check_accounting(res)
    assert len(res.manifest) == 964 and res.excluded.empty  # helpers.data.checks excludes none of it
    assert {"frontal view", "image check", "lung mask check"} <= set(res.flow["step"])
    role_label = res.manifest.groupby(["split_role", "label"]).size().to_dict()
    assert role_label == {("classify", "covid"): 358, ("classify", "normal"): 357, ("segment", ""): 249}
    assert S.detect_source(SHARED) == "manifest"


@pytest.mark.realdata
@needs_meta
def test_real_ieee8023_metadata():
    f = META / "ieee8023" / "metadata.csv"
    if not f.is_file():
        pytest.skip(f"{f} not found")
    res = S.adapt_ieee8023(f.parent, check_images=False)
    check_accounting(res)
    # independent count with plain pandas
    m = pd.read_csv(f, dtype=str, keep_default_na=False)
    xray = m["modality"] == "X-ray"
    frontal = m["view"].isin(["PA", "AP", "AP Supine", "AP erect", "AP Erect"])
    age = pd.to_numeric(m["age"], errors="coerce")
    adult = age.isna() | (age >= 18)
    covid = m["finding"].str.contains("COVID-19", regex=False)
    normal = m["finding"] == "No Finding"
    got = res.manifest["label"].value_counts().to_dict()
    assert got == {"covid": int((xray & frontal & adult & covid).sum()),
                   "normal": int((xray & frontal & adult & normal).sum())}
    assert set(res.manifest["view"]) <= {"PA", "AP", "AP Supine", "AP erect"}
    assert res.manifest["patient_id"].str.startswith("ieee-").all()
    if len(m) == 673:  # the pinned snapshot (upstream 0f7245d, 2020-06-05)
        assert [c for _, _, c in flow_counts(res)] == [673, 589, 477, 453, 452, 452, 452, 452, 452]
        assert got == {"covid": 433, "normal": 19}
        assert res.manifest["patient_id"].nunique() == 268
        assert (res.notes["note"] == "age not stated (kept)").sum() == 136


@pytest.mark.realdata
@needs_meta
def test_real_figure1_metadata():
    f = META / "figure1" / "metadata.csv"
    if not f.is_file():
        pytest.skip(f"{f} not found")
    res = S.select_metadata("figure1")  # the shared metadata is the default offline source
    check_accounting(res)
    m = pd.read_csv(f, dtype=str, keep_default_na=False, encoding="cp1252")
    assert res.manifest["label"].value_counts().to_dict() == {
        "covid": int((m["finding"] == "COVID-19").sum()), "normal": int((m["finding"] == "No finding").sum())}
    if len(m) == 55:  # the pinned snapshot 95bb569
        assert [c for _, _, c in flow_counts(res)] == [55, 55, 38, 38, 38, 38, 38, 38, 38]
        assert res.manifest["patient_id"].nunique() == 34


NIH_META = S.shipped_metadata("nih-cxr8") if "nih-cxr8" in S.SOURCES else None


@pytest.mark.skipif(NIH_META is None,
                    reason="torchxrayvision with data/Data_Entry_2017_v2020.csv.gz not installed")
def test_nih_metadata_from_torchxrayvision():
    flow = S.count_selection("nih")
    res = S.select_metadata("nih")
    meta = S.nih_metadata()
    age = pd.to_numeric(meta["Patient Age"], errors="coerce")
    sel = meta[(meta["Finding Labels"] == "No Finding") & (age >= 18)]
    by_view = sel["View Position"].value_counts().to_dict()
    assert res.manifest["view"].value_counts().to_dict() == by_view
    assert flow["n_kept"].iloc[-1] == len(sel) == len(res.manifest)
    assert res.manifest["patient_id"].str.fullmatch(r"nih-\d{8}").all()
    if len(meta) == 112120:
        assert by_view == {"PA": 37414, "AP": 19803}
        assert [c for _, _, c in flow_counts(res)][:3] == [112120, 60361, 57217]


CHEXPERT_META = S.shipped_metadata("chexpert")


@pytest.mark.skipif(CHEXPERT_META is None,
                    reason="torchxrayvision with data/chexpert_train.csv.gz not installed")
def test_chexpert_metadata_from_torchxrayvision():
    res = S.select_metadata("chexpert")
    meta = S.chexpert_metadata()
    age = pd.to_numeric(meta["Age"], errors="coerce")
    nf = pd.to_numeric(meta["No Finding"], errors="coerce")
    sd = pd.to_numeric(meta["Support Devices"], errors="coerce")
    expect = (meta["Frontal/Lateral"] == "Frontal") & (nf == 1) & (age > 18) & (sd != 1)
    assert len(res.manifest) == int(expect.sum())
    if len(meta) == 223414:
        assert [c for _, _, c in flow_counts(res)][:5] == [223414, 191027, 16974, 16863, 9484]
    sampled = S.select_metadata("chexpert", n_sample=1000, seed=0)
    assert len(sampled.manifest) == 1000


def test_select_metadata_rejects_segment_sources():
    with pytest.raises(ValueError, match="classify sources only"):
        S.count_selection("montgomery")

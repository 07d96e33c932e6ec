"""Tiny on-disk fixtures in the original layout of each public source (for test_sources / test_dedup).

Every builder writes into a folder it is given (a pytest ``tmp_path``) and returns that folder.
The images are small but not blank: smooth random structure plus rib-like stripes, so that
perceptual hashes and thumbnail correlations behave as they do on radiographs. The expected
flows of the adapter tests are written next to the rows that produce them.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("gray", "gray_jpg", "rgb_gray", "rgba_gray", "rgb_colour", "gray16", "corrupt", "bilevel", "none")


def cxr_like(seed: int, size: tuple[int, int] = (96, 120)) -> np.ndarray:
    """A uint8 (H, W) image with radiograph-like structure; different seeds give unrelated images."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    base = 90 + 80 * np.exp(-((xx - 0.5) ** 2) / 0.02)                       # mediastinum
    base += 25 * np.sin(2 * np.pi * (yy * rng.uniform(6, 10) + xx * rng.uniform(-1, 1)))  # ribs
    noise = Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8))
    for r, wgt in ((6, 1.0), (2, 0.5)):
        base += wgt * (np.asarray(noise.filter(ImageFilter.GaussianBlur(r)), float) - 127)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_image(path: Path, kind: str = "gray", seed: int = 0, size: tuple[int, int] = (96, 120)) -> Path:
    """Write one test image of ``kind`` (see :data:`KINDS`); ``none`` writes nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = cxr_like(seed, size)
    if kind == "none":
        return path
    if kind == "gray":
        Image.fromarray(a, "L").save(path, format="PNG")
    elif kind == "gray_jpg":
        Image.fromarray(a, "L").save(path, format="JPEG", quality=90)
    elif kind == "rgb_gray":
        Image.fromarray(np.stack([a] * 3, -1), "RGB").save(path, format="PNG")
    elif kind == "rgba_gray":
        Image.fromarray(np.stack([a, a, a, np.full_like(a, 255)], -1), "RGBA").save(path, format="PNG")
    elif kind == "rgb_colour":
        rgb = np.stack([a, (a * 0.5).astype(np.uint8), 255 - a], -1)
        Image.fromarray(rgb, "RGB").save(path, format="PNG")
    elif kind == "gray16":
        Image.fromarray(a.astype(np.uint16) * 257).save(path, format="PNG")
    elif kind == "bilevel":
        Image.fromarray(a > 127).convert("1").save(path, format="PNG")
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image")
    else:
        raise ValueError(kind)
    return path


def write_mask(path: Path, size: tuple[int, int], box: tuple[float, float, float, float],
               values: tuple[int, int] = (0, 255), fmt: str = "PNG", palette: bool = False) -> Path:
    """A rectangle mask; ``box`` = (x0, y0, x1, y1) as fractions of ``size`` (W, H)."""
    w, h = size
    m = np.full((h, w), values[0], dtype=np.uint8)
    x0, y0, x1, y1 = box
    m[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = values[1]
    im = Image.fromarray(m, "L")
    if palette:
        im = im.convert("P")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# ieee8023: 14 rows -> 5 kept (4 covid, 1 normal)

IEEE_HEADER = ["patientid", "offset", "sex", "age", "finding", "view", "modality", "folder",
               "filename", "license", "clinical_notes"]
IEEE_ROWS = [  # patientid, sex, age, finding, view, modality, folder, filename, license, kind
    ("1", "M", "65", "COVID-19", "PA", "X-ray", "images", "c1.png", "CC BY", "gray"),          # kept
    ("2", "F", "", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "images", "c2.jpg", "",
     "gray_jpg"),                                                                               # kept, no age
    ("3", "M", "50", "COVID-19, ARDS", "AP", "X-ray", "images", "c3.png", "", "rgb_gray"),     # kept, RGB
    ("4", "F", "40", "No Finding", "PA", "X-ray", "images", "n4.png", "", "gray"),             # kept normal
    ("5", "M", "60", "COVID-19", "L", "X-ray", "images", "c5.png", "", "gray"),                # lateral
    ("6", "M", "60", "COVID-19", "Axial", "CT", "volumes", "c6.nii.gz", "", "none"),           # CT
    ("7", "F", "12", "COVID-19", "PA", "X-ray", "images", "c7.png", "", "gray"),               # child
    ("8", "M", "70", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "images", "s8.png", "", "gray"),
    ("9", "M", "70", "COVID-19", "PA", "X-ray", "images", "missing9.png", "", "none"),         # missing
    ("10", "M", "70", "COVID-19", "AP", "X-ray", "images", "corrupt10.png", "", "corrupt"),    # unreadable
    ("11", "M", "70", "COVID-19", "PA", "X-ray", "images", "colour11.png", "", "rgb_colour"),  # colour
    ("12", "M", "70", "COVID-19", "PA", "X-ray", "images", "deep12.png", "", "gray16"),        # 16-bit
    ("13", "F", "45", "COVID-19", "AP erect", "X-ray", "images", "c13.png", "", "gray"),       # kept
    ("1", "M", "65", "COVID-19", "PA", "X-ray", "images", "c1.png", "CC BY", "gray"),          # repeated row
]


def build_ieee8023(root: Path) -> Path:
    rows = []
    for k, (pid, sex, age, finding, view, mod, folder, fn, lic, kind) in enumerate(IEEE_ROWS):
        rows.append([pid, "0", sex, age, finding, view, mod, folder, fn, lic, "note"])
        if kind != "none":
            write_image(root / folder / fn, kind, seed=k)
    _write_csv(root / "metadata.csv", IEEE_HEADER, rows)
    return root


# ---------------------------------------------------------------------------------------------
# Figure 1: 8 rows -> 4 kept; Actualmed: 5 rows -> 3 kept

FIG1_ROWS = [  # patientid, age, finding, view, file (None = no image)
    ("COVID-00001", "33", "COVID-19", "AP erect", "COVID-00001.jpg"),
    ("COVID-00002", "50+", "", "AP erect", "COVID-00002.jpg"),          # finding not stated
    ("COVID-00003a", "50+", "COVID-19", "", "COVID-00003a.png"),         # view not stated: kept
    ("COVID-00003b", "", "COVID-19", "", "COVID-00003b.PNG"),            # same patient, upper-case ext
    ("COVID-00004", "early 40s", "No finding", "PA", "COVID-00004.jpeg"),
    ("COVID-00005", "", "Pneumonia", "PA", "COVID-00005.jpg"),           # other finding
    ("COVID-00006", "", "COVID-19", "PA", None),                         # no image file
    ("COVID-00007", "", "COVID-19", "L", "COVID-00007.jpg"),             # lateral
]


def build_figure1(root: Path) -> Path:
    header = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature",
              "pO2 saturation", "view", "modality", "artifacts/distortion", "notes"]
    rows = []
    for k, (pid, age, finding, view, fn) in enumerate(FIG1_ROWS):
        rows.append([pid, "", "M", age, finding, "", "39.1", "90", view, "X-ray", "", "T 39.1°C"])
        if fn:
            kind = "gray_jpg" if fn.lower().endswith(("jpg", "jpeg")) else "gray"
            write_image(root / "images" / fn, kind, seed=100 + k)
    _write_csv(root / "metadata.csv", header, rows, encoding="cp1252")  # the real file is cp1252 too
    return root


ACTUALMED_ROWS = [  # patientid, finding, view, imagename, kind
    ("ANON1", "COVID-19", "PA", "CR.1.png", "gray"),
    ("ANON1", "COVID-19", "AP", "CR.2.png", "gray"),
    ("ANON2", "", "PA", "CR.3.png", "gray"),              # inconclusive
    ("ANON3", "No finding", "PA", "DX.4.png", "rgba_gray"),  # kept, converted
    ("ANON4", "No finding", "PA", "DX.5.png", "none"),     # missing file
]


def build_actualmed(root: Path) -> Path:
    header = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature",
              "pO2 saturation", "view", "modality", "imagename", "artifacts/distortion", "notes"]
    rows = []
    for k, (pid, finding, view, name, kind) in enumerate(ACTUALMED_ROWS):
        rows.append([pid, "", "", "", finding, "", "", "", view, "X-ray", name, "", ""])
        write_image(root / "images" / name, kind, seed=200 + k)
    _write_csv(root / "metadata.csv", header, rows)
    return root


# ---------------------------------------------------------------------------------------------
# NIH ChestX-ray14: 7 rows -> 3 kept

NIH_ROWS = [  # image, labels, patient, age, sex, view, folder, kind
    ("00000001_000.png", "No Finding", "1", "57", "M", "PA", "images_001/images", "gray"),
    ("00000001_001.png", "Cardiomegaly", "1", "58", "M", "PA", "images_001/images", "gray"),
    ("00000002_000.png", "No Finding", "2", "12", "F", "AP", "images_001/images", "gray"),
    ("00000003_000.png", "No Finding", "3", "30", "F", "AP", "images_002/images", "gray"),
    ("00000004_000.png", "No Finding", "4", "45", "M", "PA", "images_002/images", "none"),
    ("00000005_000.png", "No Finding", "5", "81", "F", "PA", "images_002/images", "rgba_gray"),
    ("00000006_000.png", "Effusion|Infiltration", "6", "40", "M", "AP", "images_002/images", "gray"),
]


def build_nih(root: Path) -> Path:
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
              "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
              "OriginalImagePixelSpacing[x", "y]"]
    rows = []
    for k, (img, lab, pid, age, sex, view, folder, kind) in enumerate(NIH_ROWS):
        rows.append([img, lab, "0", pid, age, sex, view, "1024", "1024", "0.143", "0.143"])
        write_image(root / folder / img, kind, seed=300 + k)
    _write_csv(root / "Data_Entry_2017_v2020.csv", header, rows)
    return root


# ---------------------------------------------------------------------------------------------
# CheXpert: train 7 + valid 1 rows -> 3 kept

CHEXPERT_COLS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
                 "Enlarged Cardiomediastinum", "Cardiomegaly", "Support Devices"]
CHEXPERT_TRAIN = [  # patient/study/file, sex, age, F/L, AP/PA, No Finding, Support Devices, kind
    ("patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP", "1.0", "", "gray_jpg"),
    ("patient00001/study1/view2_lateral.jpg", "Female", "68", "Lateral", "", "1.0", "", "gray_jpg"),
    ("patient00002/study1/view1_frontal.jpg", "Male", "40", "Frontal", "PA", "", "", "gray_jpg"),
    ("patient00003/study1/view1_frontal.jpg", "Male", "18", "Frontal", "PA", "1.0", "", "gray_jpg"),
    ("patient00004/study1/view1_frontal.jpg", "Male", "50", "Frontal", "AP", "1.0", "1.0", "gray_jpg"),
    ("patient00005/study1/view1_frontal.jpg", "Female", "33", "Frontal", "PA", "1.0", "-1.0", "gray_jpg"),
    ("patient00006/study1/view1_frontal.jpg", "Female", "70", "Frontal", "AP", "1.0", "0.0", "none"),
]
CHEXPERT_VALID = [
    ("patient64541/study1/view1_frontal.jpg", "Male", "55", "Frontal", "PA", "1.0", "", "gray_jpg"),
]


def build_chexpert(root: Path) -> Path:
    """Writes ``root/CheXpert-v1.0-small/{train.csv,valid.csv,train/,valid/}``; returns ``root``."""
    base = root / "CheXpert-v1.0-small"
    for split, rows in (("train", CHEXPERT_TRAIN), ("valid", CHEXPERT_VALID)):
        out = []
        for k, (rel, sex, age, fl, appa, nf, sd, kind) in enumerate(rows):
            p = f"CheXpert-v1.0-small/{split}/{rel}"
            out.append([p, sex, age, fl, appa, nf, "", "", sd])
            write_image(base / split / rel, kind, seed=400 + k + (50 if split == "valid" else 0))
        _write_csv(base / f"{split}.csv", CHEXPERT_COLS, out)
    return root


# ---------------------------------------------------------------------------------------------
# segmentation sources

SEG_SIZE = (80, 96)  # W, H of the fixture radiographs
LEFT_BOX = (0.1, 0.2, 0.45, 0.8)
RIGHT_BOX = (0.55, 0.2, 0.9, 0.8)


def build_montgomery(root: Path) -> Path:
    """3 images: 0001 (both masks, clinical reading), 0002 (0/1-valued left mask), 0003 (no right mask)."""
    for k, stem in enumerate(("MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0")):
        write_image(root / "CXR_png" / f"{stem}.png", "gray", seed=500 + k, size=SEG_SIZE)
        vals = (0, 1) if stem == "MCUCXR_0002_1" else (0, 255)
        write_mask(root / "ManualMask" / "leftMask" / f"{stem}.png", SEG_SIZE, LEFT_BOX, vals)
        if stem != "MCUCXR_0003_0":
            write_mask(root / "ManualMask" / "rightMask" / f"{stem}.png", SEG_SIZE, RIGHT_BOX)
    (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
    (root / "ClinicalReadings" / "MCUCXR_0001_0.txt").write_text(
        "Patient's Sex: M\nPatient's Age: 045Y\nnormal\n")
    return root


def build_shenzhen(root: Path) -> Path:
    """5 images -> 3 kept: 0001 ok, 0002 no mask, 0003 half-size mask (resized), 0004 mask of
    another aspect ratio (excluded), MCUCXR_0005 (Montgomery image in the Kaggle folder)."""
    w, h = SEG_SIZE
    both = (0.1, 0.2, 0.9, 0.8)
    stems = ("CHNCXR_0001_0", "CHNCXR_0002_1", "CHNCXR_0003_0", "CHNCXR_0004_1", "MCUCXR_0005_0")
    for k, stem in enumerate(stems):
        write_image(root / "CXR_png" / f"{stem}.png", "gray", seed=600 + k, size=SEG_SIZE)
    write_mask(root / "mask" / "CHNCXR_0001_0_mask.png", SEG_SIZE, both)
    write_mask(root / "mask" / "CHNCXR_0003_0_mask.png", (w // 2, h // 2), both)
    write_mask(root / "mask" / "CHNCXR_0004_1_mask.png", (h, w), both)
    write_mask(root / "mask" / "MCUCXR_0005_0_mask.png", SEG_SIZE, both)
    (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
    (root / "ClinicalReadings" / "CHNCXR_0001_0.txt").write_text("male 35yrs\nnormal\n")
    return root


def build_jsrt(root: Path) -> Path:
    """2 images (128x128): JPCLN001.IMG.png with 64x64 GIF masks (resized) -> kept;
    JPCNN002.png without a right-lung mask -> excluded."""
    write_image(root / "images" / "JPCLN001.IMG.png", "gray", seed=700, size=(128, 128))
    write_image(root / "images" / "JPCNN002.png", "gray", seed=701, size=(128, 128))
    write_mask(root / "masks" / "left_lung" / "JPCLN001.gif", (64, 64), LEFT_BOX, fmt="GIF", palette=True)
    write_mask(root / "masks" / "right_lung" / "JPCLN001.gif", (64, 64), RIGHT_BOX, fmt="GIF", palette=True)
    write_mask(root / "masks" / "left_lung" / "JPCNN002.png", (128, 128), LEFT_BOX)
    return root


def build_manifest_folder(root: Path) -> Path:
    """A 3-row manifest folder (2 classify, 1 segment) in the shared-data layout."""
    write_image(root / "covid" / "a.png", "gray", seed=800)
    write_image(root / "normal" / "b.png", "rgb_gray", seed=801)
    write_image(root / "seg" / "images" / "c.png", "gray", seed=802, size=SEG_SIZE)
    write_mask(root / "seg" / "masks" / "c.png", SEG_SIZE, LEFT_BOX)
    header = ["path", "split_role", "label", "source", "source_repo", "source_path", "source_commit",
              "patient_id", "view", "sex", "age", "license", "mask_path"]
    rows = [["covid/a.png", "classify", "covid", "ieee8023", "", "images/a.png", "", "ieee-1", "PA",
             "", "", "", ""],
            ["normal/b.png", "classify", "normal", "nih-cxr8", "", "b.png", "", "nih-00000002", "AP",
             "", "", "", ""],
            ["seg/images/c.png", "segment", "", "jsrt-scr", "", "c.png", "", "jsrt-c", "PA", "", "", "",
             "seg/masks/c.png"]]
    _write_csv(root / "manifest.csv", header, rows)
    return root

"""Run profiles: every tunable number of the pipeline, once, with the paper section it comes from.

Four frozen profiles share one code path:

* ``smoke``  generated phantoms, tiny images, few folds and epochs; CPU, minutes (notebook defaults);
* ``cpu``    the real chest X-rays at reduced size; at most 90 minutes on 2 CPU cores;
* ``paper``  the paper's full protocol (512 px masks, 10 folds, the paper's epochs); for a GPU;
* ``cpu-deconf`` ``cpu`` plus the de-confounding ladder of :mod:`helpers.ladder` (notebook 05b).

``resolve()`` is the only entry point notebooks use. Overrides are checked against the field names
so that a typo fails loudly instead of silently running the default.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers import paths

PAPER_MASK_SIZE = 512          # section 3.2: images and masks resized to 512 x 512
PAPER_AREA_THRESHOLD = 50_000  # section 3.2: minimum lung area in pixels, defined at 512 x 512
#: the rungs of the de-confounding ladder (helpers.ladder.RUNGS defines them), in their order
LADDER_RUNGS = ("paper", "crop", "standardise", "augment", "film")


@dataclass(frozen=True)
class Profile:
    """All settings of one run. Sizes are pixels, epochs are full passes over a training part."""

    name: str
    # --- data -------------------------------------------------------------------------------------
    data: str                      # "synthetic" (generated phantoms) or "real" (a manifest folder)
    n_patients: int = 0            # synthetic only: patients per class
    images_per_patient: tuple[int, int] = (1, 3)  # synthetic only: inclusive range
    n_seg_pairs: int = 0           # synthetic only: image/mask pairs for the UNet
    shortcut_strength: float = 0.0  # synthetic only: P(site marker) = 0.5 +- strength/2 by class
    phantom_size: int = 128        # synthetic only: generated image side
    finding_contrast: float = 1.0  # synthetic only: scales the opacity of the COVID-like findings
    # synthetic only: patients of a second phantom folder (label pneumonia, the COVID films' site),
    # read with the first into one cohort as several real data folders are
    pneumonia_patients: int = 0
    aspect_cue: float = 0.0        # synthetic only: share of COVID films written taller than wide
    max_images_per_class: int = 0  # real only: 0 = all curated images
    strict: bool = False           # real only: a row excluded by a file or content check fails the run
    # --- segmentation (section 3.2, 4.2, Table 4, Algorithm 1) ------------------------------------
    seg_size: int = PAPER_MASK_SIZE
    seg_folds: int = 10            # section 4.2: "KFold (10 Fold) cross-validation"
    seg_val_fraction: float = 0.1  # Algorithm 1 line 5: split(train_data, split_size=0.1)
    unet_arch: str = "paper"       # "paper" (Table 4) or "smp" (segmentation_models_pytorch.Unet)
    unet_epochs: int = 25          # section 4.2: "25 epochs for each fold"
    unet_lr: float = 0.005         # section 4.2: "learning rate of 0.005"
    unet_batch: int = 8            # not stated for the UNet; Table 5's batch size
    unet_base_channels: int = 32   # Table 4: 32-64-128-256-512
    # beyond the paper: share of UNet training films given a synthetic lung opacity (consolidation
    # or haze, the true mask unchanged; augment.lung_opacity), so opaque lungs are still segmented
    unet_opacity: float = 0.0
    # --- mask refinement (section 3.2) --------------------------------------------------------------
    dilate_iters: int = 8          # "dilation operation for 8 iterations"
    close_iters: int = 2           # "2 iterations of closing operation"
    area_threshold_512: int = PAPER_AREA_THRESHOLD
    # --- augmentation (Table 3) ---------------------------------------------------------------------
    augment: bool = True           # UNet training (Table 3 applied jointly to image and mask)
    # --- classification (section 4.3, Table 5, Algorithm 2) -----------------------------------------
    cls_size: int = 512            # Table 3: pad / centre crop 512 for the classification set too
    n_folds: int = 10              # section 4.3: "10 fold cross-validation"
    cls_val_fraction: float = 0.1  # inner validation split (Algorithm 2 lines 11-13)
    hrnet: str = "hrnet_w18"       # HRNet width is not stated in the paper
    head_hidden: int = 512         # Fig. 11 head: FC-ReLU-Dropout-FC (widths not legible in the text)
    head_dropout: float = 0.5
    cls_epochs: int = 100          # Table 5's steps 30/60/90 only act with >= 90 epochs
    cls_batch: int = 8             # Table 5: 8
    cls_lr: float = 0.01           # section 4.3: learning rate 0.01
    momentum: float = 0.8          # section 4.3: momentum 0.8
    weight_decay: float = 1e-4     # section 4.3: weight decay 0.0001
    lr_factor: float = 0.1         # section 4.3: learning rate factor 0.1
    lr_steps: tuple[int, ...] = (30, 60, 90)  # section 4.3: learning rate steps 30, 60, 90
    lr_steps_ref_epochs: int = 100  # epochs the steps refer to; scaled in proportion otherwise
    lr_schedule: str = "steps"     # "steps": x lr_factor at lr_steps (section 4.3); "cosine": decays to 0
    cls_select: str = "last"       # Algorithm 2 tests after the epoch loop; "best_val_loss" also offered
    cls_augment: bool = True       # Table 3 augmentation for the classifier ("augment" is the UNet's)
    # "table3" (the paper's) or "light" (no rotation/scale/shear, gamma 0.8-1.25; augment.AUGMENT_MODES):
    # Table 3 on standardised lung crops left cpu-film's training loss at the class prior
    cls_augment_mode: str = "table3"
    baselines: tuple[str, ...] = ("resnet152", "densenet121", "efficientnet_b4")  # Table 7
    baseline_epochs: int = 0       # epochs of the Table 7 baselines; 0 = cls_epochs (the paper's)
    # --- de-confounded classifier inputs (beyond the paper; helpers.preprocess, issue 9) ----------------
    cls_lung_standardise: bool = False  # grey levels rescaled by in-lung percentiles (exposure, processing)
    cls_crop_lungs: bool = False   # square crop around the refined lung mask, resized to cls_size
    cls_crop_margin: float = 0.05  # margin of that crop on each side, fraction of the lung box side
    cls_film_only: bool = False    # keep the lung crop inside the film: no zero padding from io.square
    ladder: tuple[str, ...] = ()   # rungs of helpers.ladder to train and audit in notebook 05b
    # more data folders beside DATA_DIR (their names, siblings of it), one cohort with it: e.g.
    # ("cxr-pneumonia",) adds the non-COVID films of the COVID films' own sources
    extra_data: tuple[str, ...] = ()
    # the segmentation films (JSRT, Shenzhen, Montgomery: non-COVID sites) also join the
    # classification cohort as non-COVID films (label "other"), each with the lung mask of the
    # UNet fold that did not train on it
    seg_negatives: bool = False
    # notebook 05c: for every source with at least loso_min_negatives non-COVID films, train the
    # proposed model and the thumbnail floor without that source and score its films
    leave_site_out: bool = False
    loso_min_negatives: int = 10
    # --- shortcut audits (beyond the paper; DeGrave et al. 2021) ---------------------------------------
    audit_model: str = "hrnet_w18"  # CNN for the source / lungs-blacked-out / mask-only audits
    audit_cnn_permutation: bool = True  # also train the CNN on patient-level permuted labels
    audit_epochs: int = 0          # epochs of the audit CNNs; 0 = cls_epochs
    n_permutations: int = 200      # permutations for the low-level audit's null distribution
    # --- explanation (Figs. 9, 12) ------------------------------------------------------------------
    gradcam_per_class: int = 4     # images per class shown in the heat-map figures
    # --- compute ------------------------------------------------------------------------------------
    bf16: bool = False             # bf16 autocast where the device computes bf16 natively (run.compute)
    channels_last: bool = False
    fast_path_off: tuple[str, ...] = ()  # networks (name prefixes) kept in fp32 NCHW: bf16 is slower for them
    num_workers: int = 0
    torch_threads: int = 0         # 0 = leave torch's default (under Ray: threads per CPU fold)
    executor: str = "local"        # "local": folds one after another; "ray": at once (helpers.run.executor)

    # ------------------------------------------------------------------------------------------------
    @property
    def area_threshold(self) -> int:
        """The 50,000 px threshold of section 3.2 at ``seg_size`` (:meth:`area_threshold_at`)."""
        return self.area_threshold_at(self.seg_size)

    def area_threshold_at(self, size: int) -> int:
        """The 50,000 px threshold at 512 x 512 scaled by area to ``size`` x ``size``."""
        return int(round(self.area_threshold_512 * (size / PAPER_MASK_SIZE) ** 2))

    def lr_milestones(self, epochs: int | None = None) -> list[int]:
        """Epochs at which the learning rate is multiplied by ``lr_factor``, scaled to ``epochs``
        (none under the cosine schedule)."""
        epochs = self.cls_epochs if epochs is None else epochs
        if self.lr_schedule == "cosine":
            return []
        scale = epochs / self.lr_steps_ref_epochs
        steps = sorted({max(1, int(round(s * scale))) for s in self.lr_steps})
        return [s for s in steps if s < epochs] if epochs > 1 else []

    def for_network(self, name: str, role: str = "proposed") -> "Profile":
        """The settings one classifier trains with: ``role`` "proposed" (HRNet, segmented or not),
        "baseline" (Table 7) or "audit" (shortcut-audit CNNs) picks its epochs, and networks named
        in ``fast_path_off`` train without bf16 autocast and channels_last."""
        if role not in ("proposed", "baseline", "audit"):
            raise ValueError(f"role must be 'proposed', 'baseline' or 'audit', got {role!r}")
        epochs = {"proposed": 0, "baseline": self.baseline_epochs, "audit": self.audit_epochs}[role]
        changes: dict[str, Any] = {"cls_epochs": epochs or self.cls_epochs}
        if any(name.startswith(prefix) for prefix in self.fast_path_off):
            changes.update(bf16=False, channels_last=False)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["area_threshold"] = self.area_threshold
        d["lr_milestones"] = self.lr_milestones()
        d["baseline_epochs_used"] = self.baseline_epochs or self.cls_epochs
        d["audit_epochs_used"] = self.audit_epochs or self.cls_epochs
        return d


# Which settings each stage reads. A stage's results are reused as long as these settings, the
# seed, the external set and the results of its upstream stages are unchanged, so changing a
# classifier setting re-runs notebooks 04-06 and keeps curation, the UNet and refinement.
# Every Profile field must appear here (a unit test checks); ``figures`` reads them all, because
# the summary lists the whole profile.
_COMPUTE = ("bf16", "channels_last", "fast_path_off", "num_workers", "torch_threads")
_CLASSIFIER = ("cls_size", "n_folds", "cls_val_fraction", "hrnet", "head_hidden", "head_dropout",
               "cls_epochs", "cls_batch", "cls_lr", "momentum", "weight_decay", "lr_factor", "lr_steps",
               "lr_steps_ref_epochs", "lr_schedule", "cls_select", "cls_augment", "cls_augment_mode",
               "cls_lung_standardise",
               "cls_crop_lungs", "cls_crop_margin", "cls_film_only", *_COMPUTE)
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "curation": ("data", "n_patients", "images_per_patient", "n_seg_pairs", "shortcut_strength",
                 "phantom_size", "finding_contrast", "pneumonia_patients", "aspect_cue",
                 "max_images_per_class", "strict", "seg_size", "cls_size", "n_folds",
                 "seg_folds", "extra_data", "seg_negatives"),
    "unet": ("seg_size", "seg_folds", "seg_val_fraction", "unet_arch", "unet_epochs", "unet_lr",
             "unet_batch", "unet_base_channels", "unet_opacity", "augment", *_COMPUTE),
    "refine": ("seg_size", "cls_size", "unet_arch", "unet_base_channels", "dilate_iters", "close_iters",
               "area_threshold_512", *_COMPUTE),
    "hrnet": _CLASSIFIER,
    "baselines": (*_CLASSIFIER, "baselines", "baseline_epochs"),
    "audits": (*_CLASSIFIER, "audit_model", "audit_epochs", "audit_cnn_permutation", "n_permutations"),
    "ladder": (*_CLASSIFIER, "ladder"),
    "sites": (*_CLASSIFIER, "leave_site_out", "loso_min_negatives"),
    "figures": ("gradcam_per_class", "*"),  # "*": every setting, for the summary
}


# Settings that change how a run executes but no result: the same seed gives the same files under
# either executor (tests/unit/test_executor.py), so they are part of no stage's key and switching
# them resumes a run instead of moving its results aside.
EXECUTION_FIELDS = ("executor",)


def stage_settings(profile: "Profile", stage: str) -> dict[str, Any]:
    """The profile settings ``stage`` reads (all of them for ``figures``, execution settings
    excepted), as plain values."""
    d = dataclasses.asdict(profile)
    names = STAGE_FIELDS[stage]
    if "*" in names:
        return {k: v for k, v in d.items() if k not in EXECUTION_FIELDS}
    return {k: d[k] for k in names}


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        # Plumbing, not science. 64 px phantoms whose findings are drawn with 4x the default
        # opacity, so that a from-scratch HRNet can learn them from ~140 training images in a few
        # epochs: 10 for the proposed model (7 left its pooled AUC at the edge of what the smoke
        # chain test asks), 7 for the baselines and audit CNNs, which keeps the chain inside 5
        # minutes on 2 CPU cores. The classifier trains without Table 3 augmentation and without
        # learning-rate steps (scaled to 7-10 epochs they would cut the rate after 2 epochs, and
        # the augmented short run learns nothing). The Table 7 baselines are replaced by lighter
        # members of the same families (ResNet-18, DenseNet-121, EfficientNet-B0) to keep the
        # chain within minutes on 2 CPU cores; cpu and paper use the Table 7 models. Measured
        # numbers behind these choices: docs/measurements.md (dated, with the revision).
        name="smoke", data="synthetic", n_patients=50, images_per_patient=(1, 3), n_seg_pairs=60,
        shortcut_strength=0.9, phantom_size=96, finding_contrast=4.0,
        # a second phantom folder of pneumonia films from the COVID films' site (the several-folder
        # cohort and the pneumonia label), and half the COVID films taller than wide (the geometry
        # cue the geometry-only audit and the film-only input mode are checked against)
        pneumonia_patients=15, aspect_cue=0.5,
        unet_opacity=0.5,  # the UNet's opacity augmentation, so its code path runs in every chain
        seg_size=64, seg_folds=3, unet_epochs=25, unet_lr=0.005, unet_batch=8, unet_base_channels=8,
        cls_size=64, n_folds=3, hrnet="hrnet_w18_small", head_hidden=64,
        cls_epochs=10, baseline_epochs=7, audit_epochs=7, cls_batch=16, cls_augment=False, lr_steps=(),
        gradcam_per_class=3, bf16=True, channels_last=True,
        baselines=("resnet18", "densenet121", "efficientnet_b0"), audit_model="resnet18",
        audit_cnn_permutation=False, ladder=("paper", "crop"),  # the ladder's code path, two rungs
        leave_site_out=True, loso_min_negatives=3,  # notebook 05c: the proposed model without each site
    ),
    "cpu": Profile(
        # Real radiographs within 90 minutes on 2 CPU cores: 128 px, 3 classification folds. UNet
        # learning rate 0.001 instead of the paper's 0.005: at 0.005 about half of the
        # initialisations of the normalisation-free Table 4 network died on these images, and
        # held-out Dice was lower on the hardest fold. The classifier trains without Table 3
        # augmentation (in 8-epoch runs it cost AUC) and with a cosine decay of the learning rate
        # to 0 instead of the paper's steps, so a short run settles instead of stopping mid-stride.
        # Epochs chosen from the curves (2026-12-02, fold 1 of the shared data, HRNet on
        # segmented lungs, 11.3 s per epoch): under a 24-epoch cosine the validation AUC stayed
        # within 0.01 of its final 0.962 from epoch 18 and training accuracy reached 1.00; a
        # 12-epoch cosine ended at the same test-fold AUC (0.892 against 0.893) but a higher
        # validation loss (0.39 against 0.26). 16 epochs sits between the two; each run's
        # plateau table (hrnet/plateau.csv) checks that its curves flattened. The Table 7
        # baselines get the same recipe with their epochs cut to 4 to fit the budget (ResNet-152
        # and EfficientNet-B4 run at 10-11 images/s here); each network trains on the path
        # measured fastest for it (helpers/run/fast_path.csv). Audit CNNs keep 8 epochs. Other
        # measured numbers: docs/measurements.md (dated, with the revision).
        name="cpu", data="real", seg_size=128, seg_folds=5, unet_epochs=40, unet_lr=0.001, unet_batch=8,
        unet_base_channels=16, cls_size=128, n_folds=3, hrnet="hrnet_w18_small", head_hidden=256,
        cls_epochs=16, cls_batch=16, cls_augment=False, lr_steps=(), lr_schedule="cosine",
        baseline_epochs=4, audit_epochs=8, bf16=True, channels_last=True,
        audit_model="hrnet_w18_small", audit_cnn_permutation=False,
    ),
    "paper": Profile(name="paper", data="real"),
}
# The cpu profile plus the de-confounding ladder of notebook 05b (helpers.ladder): every rung
# trains the proposed model with cpu's recipe and is audited on its own inputs. The main
# classifier keeps the paper's inputs, so every stage but the ladder is cpu's and a finished cpu
# run can be reused: ./run_all.sh cpu-deconf --reuse-from outputs/cpu.
PROFILES["cpu-deconf"] = replace(PROFILES["cpu"], name="cpu-deconf",
                                 ladder=LADDER_RUNGS)
# The rung the audits favoured in cpu-deconf on the shared data (figures/cpu-deconf, 2026-12-02:
# the lowest probe excess, though its model showed little in-lung signal; see that summary) as a
# profile of its own: every ladder step on in the main model. Its stages after refinement differ
# from cpu's: ./run_all.sh cpu-film --reuse-from outputs/cpu retrains notebooks 04-05.
# Its classifier augmentation is "light" (augment.AUGMENT_MODES): with Table 3's rotation, scale,
# shear and gamma 0.5-3 on standardised lung crops the training loss stayed at the class prior for
# all 16 epochs (figures/cpu-film, 2026-12-02), and in one-fold checks at learning rates 0.001-0.03,
# batch 8 or 16, without dropout, or with either the geometry or the wide gamma alone; without
# both it fell (docs/measurements.md, 2026-12-06).
PROFILES["cpu-film"] = replace(PROFILES["cpu"], name="cpu-film", cls_crop_lungs=True,
                               cls_lung_standardise=True, cls_augment=True, cls_film_only=True,
                               cls_augment_mode="light")
# COVID against every non-COVID film of the shared data: the non-COVID films of the COVID films'
# own sources (the sibling folder cxr-pneumonia, label pneumonia) and the segmentation films of
# three more sites (JSRT, Shenzhen, Montgomery; label other, each masked by the UNet fold that did
# not train on it); the classifier sees a square crop of the lung box kept inside the film, so the
# film's original shape (zero padding) does not reach it; notebook 05c leaves each site out.
# The classifier's inputs are cpu-film's (crop, standardise, light augmentation, film only). Its
# UNet also trains on films given a synthetic lung opacity (half of them; augment.lung_opacity),
# so that opaque lungs are segmented and pass refinement as often as clear ones.
# Its folds run one after another at two torch threads, like cpu's. Two single-thread folds at
# once on an embedded Ray (executor="ray", torch_threads=1, with notebooks 05, 05a and 05c queuing
# all their networks' folds together) did not pay on 2 cores: an HRNet fold trained 1.71x longer
# at one thread, so a pair gains about 15 %, but ResNet152, DenseNet121 and EfficientNet-B4 took
# 2.1-2.2x longer, the UNet and notebook 04's three folds lost too (docs/cluster.md, 2026-12-07).
PROFILES["cpu-sites"] = replace(PROFILES["cpu-film"], name="cpu-sites", extra_data=("cxr-pneumonia",),
                                seg_negatives=True, leave_site_out=True, unet_opacity=0.5)


@dataclass(frozen=True)
class RunConfig:
    """A resolved profile plus where the run reads and writes."""

    profile: Profile
    data_dir: Path | None          # manifest folder (real data) or None (phantoms under out_dir)
    out_dir: Path                  # outputs/<profile> by default
    seed: int
    external_data_dir: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: more data folders read with ``data_dir`` into one cohort (``DATA_DIR`` given as several
    #: folders, and the profile's ``extra_data``)
    extra_data_dirs: tuple[Path, ...] = ()

    @property
    def data_dirs(self) -> tuple[Path, ...]:
        """Every data folder of the cohort, ``data_dir`` first; () for phantoms."""
        return ((self.data_dir,) if self.data_dir else ()) + tuple(self.extra_data_dirs)

    def stage_dir(self, stage: str) -> Path:
        d = self.out_dir / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_dict(),
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "out_dir": str(self.out_dir),
            "seed": self.seed,
            "external_data_dir": str(self.external_data_dir) if self.external_data_dir else None,
            "overrides": dict(self.overrides),
            # only when there are any, so the key of a one-folder run stays what it was
            **({"extra_data_dirs": [str(d) for d in self.extra_data_dirs]} if self.extra_data_dirs else {}),
        }

    def summary(self) -> str:
        p = self.profile
        lines = [
            f"profile      {p.name} ({p.data} data)",
            f"data_dir     {os.pathsep.join(map(str, self.data_dirs)) or '(generated phantoms)'}",
            f"out_dir      {self.out_dir}",
            f"seed         {self.seed}",
            f"segmentation {p.unet_arch} UNet @ {p.seg_size}px, {p.seg_folds} folds x {p.unet_epochs} epochs",
            f"refinement   dilate x{scaled_iterations(p.dilate_iters, p.seg_size)}, "
            f"close x{scaled_iterations(p.close_iters, p.seg_size)} "
            f"(= {p.dilate_iters}, {p.close_iters} at 512 px), area >= {p.area_threshold} px",
            f"classifier   {p.hrnet} @ {p.cls_size}px, {p.n_folds} folds x {p.cls_epochs} epochs, "
            f"lr steps {p.lr_milestones()}",
            f"baselines    {', '.join(p.baselines)}",
        ]
        if self.external_data_dir:
            lines.append(f"external     {self.external_data_dir}")
        if self.overrides:
            lines.append(f"overrides    {json.dumps(dict(self.overrides), default=str)}")
        return "\n".join(lines)


def scaled_iterations(iters_at_512: int, size: int) -> int:
    """Iterations of a 3 x 3 kernel with the same reach at ``size`` as ``iters_at_512`` at 512 px
    (each iteration grows a mask by one pixel, so the count scales with the image side)."""
    if iters_at_512 <= 0:
        return 0
    return max(1, int(round(iters_at_512 * size / PAPER_MASK_SIZE)))


def _coerce(name: str, value: Any, current: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise TypeError(f"override {name!r} must be true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"override {name!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def make_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """Return profile ``name`` with ``overrides`` applied; unknown names or keys raise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    base = PROFILES[name]
    overrides = dict(overrides or {})
    known = {f.name for f in fields(Profile)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KeyError(
            f"unknown override(s) {unknown} for profile {name!r}; valid keys: {sorted(known)}"
        )
    coerced = {k: _coerce(k, v, getattr(base, k)) for k, v in overrides.items()}
    prof = replace(base, **coerced)
    validate(prof)
    return prof


def validate(p: Profile) -> None:
    """Reject settings the pipeline cannot run with, naming the field."""
    if p.data not in ("synthetic", "real"):
        raise ValueError(f"data must be 'synthetic' or 'real', got {p.data!r}")
    if p.cls_select not in ("last", "best_val_loss"):
        raise ValueError(f"cls_select must be 'last' or 'best_val_loss', got {p.cls_select!r}")
    if p.executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {p.executor!r}")
    if p.lr_schedule not in ("steps", "cosine"):
        raise ValueError(f"lr_schedule must be 'steps' or 'cosine', got {p.lr_schedule!r}")
    for k in ("cls_epochs", "baseline_epochs", "audit_epochs"):
        if getattr(p, k) < (1 if k == "cls_epochs" else 0):
            raise ValueError(f"{k} must be >= {1 if k == 'cls_epochs' else 0}, got {getattr(p, k)}")
    if p.cls_augment_mode not in ("table3", "light"):
        raise ValueError(f"cls_augment_mode must be 'table3' or 'light', got {p.cls_augment_mode!r}")
    if p.unet_arch not in ("paper", "smp"):
        raise ValueError(f"unet_arch must be 'paper' or 'smp', got {p.unet_arch!r}")
    for k in ("seg_size", "cls_size"):
        v = getattr(p, k)
        if v < 32 or v % 16:
            raise ValueError(f"{k} must be a multiple of 16 and >= 32 (UNet pools 4 times), got {v}")
    if p.n_folds < 2 or p.seg_folds < 2:
        raise ValueError("n_folds and seg_folds must be >= 2")
    if not 0.0 <= p.shortcut_strength <= 1.0:
        raise ValueError(f"shortcut_strength must lie in [0, 1], got {p.shortcut_strength}")
    if not 0.0 <= p.aspect_cue <= 1.0:
        raise ValueError(f"aspect_cue must lie in [0, 1], got {p.aspect_cue}")
    if not 0.0 <= p.unet_opacity <= 1.0:
        raise ValueError(f"unet_opacity must lie in [0, 1], got {p.unet_opacity}")
    if p.pneumonia_patients < 0:
        raise ValueError(f"pneumonia_patients must be >= 0, got {p.pneumonia_patients}")
    if p.data == "synthetic" and (p.n_patients < p.n_folds or p.n_seg_pairs < p.seg_folds * 3):
        raise ValueError("synthetic profile needs n_patients >= n_folds and n_seg_pairs >= 3 * seg_folds")
    if not 0.0 <= p.cls_crop_margin <= 0.5:
        raise ValueError(f"cls_crop_margin must lie in [0, 0.5], got {p.cls_crop_margin}")
    unknown = [r for r in p.ladder if r not in LADDER_RUNGS]
    if unknown:
        raise ValueError(f"ladder: unknown rung(s) {unknown}; choose from {list(LADDER_RUNGS)}")
    if p.cls_film_only and not p.cls_crop_lungs:
        raise ValueError("cls_film_only only acts on the lung crop; set cls_crop_lungs too")
    lo, hi = p.images_per_patient
    if not 1 <= lo <= hi:
        raise ValueError(f"images_per_patient must be (lo, hi) with 1 <= lo <= hi, "
                         f"got {p.images_per_patient}")


def resolve(
    profile: str = "smoke",
    data_dir: str | Path | Sequence[str | Path] = "",
    out_dir: str | Path = "",
    seed: int = 0,
    external_data_dir: str | Path = "",
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Turn notebook parameters into a :class:`RunConfig`.

    ``data_dir`` empty means: phantoms for a synthetic profile; ``$CXR_DATA_DIR`` or the shared data
    folder for a real one (an error with instructions if neither exists). Several folders make one
    cohort: a list, or one string with the folders joined by ``os.pathsep`` (``a:b`` on Linux and
    macOS); the profile's ``extra_data`` names more folders beside the first. ``out_dir`` empty
    means ``<repo>/outputs/<profile>``.
    """
    prof = make_profile(profile, overrides)
    extra: tuple[Path, ...] = ()
    if prof.data == "real":
        given = split_data_dirs(data_dir)
        ddir = paths.resolve_data_dir(given[0] if given else "")
        extra = tuple(paths.resolve_data_dir(d) for d in given[1:])
        for name in prof.extra_data:
            d = ddir.parent / name
            if not d.is_dir():
                raise FileNotFoundError(
                    f"profile {prof.name!r} reads the data folder {name!r} beside DATA_DIR, but {d} does "
                    f"not exist. Put that folder next to {ddir}, or give every folder in DATA_DIR "
                    f"(joined by {os.pathsep!r}) with OVERRIDES={{'extra_data': []}}.")
            extra += (d.resolve(),)
        extra = tuple(d for d in dict.fromkeys(extra) if d != ddir)
    else:
        ddir = None
        if split_data_dirs(data_dir):
            raise ValueError(
                f"profile {profile!r} generates its own phantoms; DATA_DIR={str(data_dir)!r} would be "
                "ignored. Use PROFILE='cpu' or 'paper' for real data, or pass "
                "OVERRIDES={'data': 'real'} to run this profile's sizes on real data."
            )
    odir = Path(out_dir).expanduser().resolve() if str(out_dir) else paths.default_out_dir(prof.name)
    odir.mkdir(parents=True, exist_ok=True)
    ext = Path(external_data_dir).expanduser().resolve() if str(external_data_dir) else None
    if ext is not None and not ext.is_dir():
        raise FileNotFoundError(f"EXTERNAL_DATA_DIR {ext} does not exist or is not a folder")
    return RunConfig(profile=prof, data_dir=ddir, out_dir=odir, seed=int(seed),
                     external_data_dir=ext, overrides=dict(overrides or {}), extra_data_dirs=extra)


def split_data_dirs(data_dir: str | Path | Sequence[str | Path]) -> list[str]:
    """``DATA_DIR`` as a list of folders: a list as given, a string split at ``os.pathsep``."""
    if isinstance(data_dir, (list, tuple)):
        return [str(d) for d in data_dir if str(d)]
    return [d for d in str(data_dir).split(os.pathsep) if d]

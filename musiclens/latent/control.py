"""Control vectors: push an attribute toward a class by editing SAE features, then decode to audio.

For a probe class k of attribute a with weight row `w_k` (over SAE features):

    h      = SAE features of the latent frame x (after the SAE's RMSNorm)
    h'     = relu(h + alpha * w_k / ||w_k||)
    x'     = SAE.decode(h') at x's own RMS          ("re-normalise RMS")
    x_edit = x + (x' - SAE.decode(h) at x's RMS)     (keep_error, default)
           = x'                                      (keep_error off: the paper's pure SAE path)
    audio  = autoencoder.decode(x_edit)              (codecs re-quantise first)

Why unit-norm `w_k`: probe weights' scale depends on regularisation and
training length; a unit direction makes alpha mean "feature units added",
comparable across classes, cells and encoders. Why relu: SAE features are
non-negative; a negative activation is off-distribution for the decoder.
Why keep the error: the SAE's reconstruction error is audible (the grid's FVU),
and the edit should change the attribute, not add the SAE's error on top.

`sweep` measures, for each alpha, on the decoded audio (labels re-measured
with CREPE / RMS / centroid, classes from the probe's own bins): the target
attribute's hit rate and distance to the target class, and for the two other
attributes the fraction of frames whose class changed versus alpha = 0
(isolation). The baseline at alpha = 0 is the same decode path without an
edit, so codec loss is not counted as an effect.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch

from ..config import check_values, option
from ..errors import MusiclensError
from .labels import ATTRIBUTES, LabelBins, frame_values, pitch_class_of
from .probes import Probes


@dataclasses.dataclass
class ControlModel:
    """An autoencoder + an SAE + its probes (a grid cell directory)."""

    ae: object
    sae: object
    probes: Probes
    cell: Path

    @property
    def bins(self) -> LabelBins:
        return self.probes.bins


def load_control(cell: str | Path, autoencoder: str | None = None, device: str = "cpu") -> ControlModel:
    """Load a grid cell (SAE + probes); the autoencoder defaults to the one the SAE was trained on."""
    from ..sae.io import load_sae
    from .autoencoders import load_autoencoder

    cell = Path(cell)
    if not cell.is_dir():
        raise MusiclensError(f"grid cell not found: {cell}")
    if not (cell / "cfg.json").exists():
        raise MusiclensError(f"{cell} has no SAE (cfg.json): pick a cell of `musiclens latent train`, not `latent`")
    sae = load_sae(cell, device=device, dtype=torch.float32)
    probes = Probes.load(cell)
    if autoencoder is None:
        meta = json.loads((cell / "cfg.json").read_text()).get("metadata", {})
        autoencoder = meta.get("autoencoder")
        if not autoencoder:
            raise MusiclensError(f"{cell}: the SAE does not record its autoencoder; pass --autoencoder")
    ae = load_autoencoder(autoencoder, device)
    if ae.dim != sae.d_in:
        raise MusiclensError(f"autoencoder {ae.name} has latent width {ae.dim}, the SAE expects {sae.d_in}")
    # a cell shipped with a flow model records the codec weights it was trained on; another codec of the
    # same width (e.g. a retrained organism) gives latents the SAE and probes have never seen
    flow_cfg = cell.parent / "config.json"
    trained_on = json.loads(flow_cfg.read_text()).get("codec_weights_hash") if flow_cfg.exists() else None
    if trained_on and trained_on != ae.weights_hash and not same_latents(ae, cell.parent / FINGERPRINT):
        raise MusiclensError(f"{cell} was trained on {ae.name} codec weights {trained_on}, these are {ae.weights_hash}: "
                             "retrain it (`python bench/latent.py --ship`) or pass a cell of this codec")
    return ControlModel(ae, sae, probes, cell)


FINGERPRINT = "codec_fingerprint.safetensors"
FINGERPRINT_TOLERANCE = 0.01


def latent_fingerprint(ae) -> torch.Tensor:
    """The codec's continuous latents `[F, D]` of a fixed one-second signal (a 440 Hz tone + seeded noise).

    Why: a cell's SAE and probes read the encoder's latents only. A codec whose weights changed
    but whose encoder gives the same latents (its decoder fine-tuned or widened, or its weights
    stored in float16) keeps the cell valid; the weights hash alone would refuse it.
    """
    import math

    n = int(ae.sample_rate)
    t = torch.arange(n, dtype=torch.float64) / ae.sample_rate
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    wav = (0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.05 * noise).float()
    return ae.latents(wav[None])[0].float().cpu()


def write_fingerprint(ae, folder: str | Path) -> Path:
    """Save `latent_fingerprint(ae)` as FOLDER/codec_fingerprint.safetensors (next to a flow's config.json)."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    path = Path(folder) / FINGERPRINT
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"latents": latent_fingerprint(ae).contiguous()}, str(tmp),
                  metadata={"codec_weights_hash": ae.weights_hash})
    return path


def same_latents(ae, path: Path) -> bool:
    """Whether `ae` gives the fingerprint's latents to within 1 % (relative L2); False without a fingerprint."""
    if not Path(path).exists():
        return False
    from safetensors.torch import load_file

    ref = load_file(str(path))["latents"]
    now = latent_fingerprint(ae)
    if now.shape != ref.shape:
        return False
    return float((now - ref).norm() / ref.norm().clamp_min(1e-12)) < FINGERPRINT_TOLERANCE


def target_class(bins: LabelBins, attribute: str, target: str) -> int:
    """Parse --to: a note for pitch (C5, F#3, 72, unvoiced); for loudness/timbre a class index,
    a value with unit (-20dB, 1500Hz) or a class name from probes.json."""
    if attribute not in ATTRIBUTES:
        raise MusiclensError(f"unknown attribute {attribute!r}: choose {', '.join(ATTRIBUTES)}")
    if attribute == "pitch":
        return pitch_class_of(target)
    t = str(target).strip()
    n = bins.n_classes(attribute)
    if re.fullmatch(r"\d+", t):
        k = int(t)
        if not 0 <= k < n:
            raise MusiclensError(f"{attribute} class must be 0..{n - 1}, got {k}")
        return k
    unit = "db" if attribute == "loudness" else "hz"
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(db|hz|khz)?", t.lower())
    if m and (m.group(2) in (None, unit) or (unit == "hz" and m.group(2) == "khz")):
        v = float(m.group(1)) * (1000.0 if m.group(2) == "khz" else 1.0)
        edges = bins.loudness_edges if attribute == "loudness" else bins.timbre_edges
        return int(np.searchsorted(np.asarray(edges[1:-1]), v, side="right"))
    names = bins.class_names(attribute)
    if t in names:
        return names.index(t)
    raise MusiclensError(f"cannot read {attribute} target {target!r}: give a class index 0..{n - 1} "
                         f"or a value like {'--to=-20dB' if attribute == 'loudness' else '1500Hz'}")


def direction(cm: ControlModel, attribute: str, k: int) -> torch.Tensor:
    w = cm.probes.weight[attribute][k].float()
    nrm = float(w.norm())
    if nrm == 0:
        raise MusiclensError(f"the {attribute} probe has a zero weight vector for class {k} "
                             "(the class never occurred in training)")
    return w / nrm


@torch.no_grad()
def edit_latents(cm: ControlModel, x: torch.Tensor, attribute: str, k: int, alpha: float,
                 keep_error: bool = True) -> torch.Tensor:
    """Edited latents [F, D] (module doc)."""
    sae = cm.sae
    xn, stats = sae.normalize(x.float())
    w = direction(cm, attribute, k).to(xn.device)  # probes load on the CPU; the cell may sit on a GPU
    h = sae.encode_normalized(xn)
    h_edit = (h + alpha * w).relu()
    x_new = sae.decode(h_edit, stats)
    if keep_error:
        return x.float() + (x_new - sae.decode(h, stats))
    return x_new


@torch.no_grad()
def edit_audio(cm: ControlModel, wav: np.ndarray, attribute: str, k: int, alpha: float,
               keep_error: bool = True) -> np.ndarray:
    """Mono audio at the autoencoder's rate -> edited audio (same length, whole frames)."""
    x = cm.ae.latents(torch.as_tensor(np.asarray(wav, dtype=np.float32))[None])[0]
    x_edit = edit_latents(cm, x, attribute, k, alpha, keep_error) if alpha != 0 else x
    return cm.ae.decode(x_edit[None])[0].cpu().numpy()


def measure(cm: ControlModel, y: np.ndarray, crepe_model: str = "tiny") -> dict[str, np.ndarray]:
    """Frame classes (and raw values) of decoded audio, with the probe's bins."""
    n = len(y) // cm.ae.hop
    v = frame_values(y, cm.ae.sample_rate, cm.ae.hop, n, crepe_model)
    return {"values": v, "classes": cm.bins.classes(v)}


def _midi(hz: np.ndarray) -> np.ndarray:
    return 69 + 12 * np.log2(np.maximum(hz, 1e-6) / 440.0)


def compare(cm: ControlModel, base: dict, edited: dict, attribute: str, k: int) -> dict:
    """Effect of one edit: target movement and other attributes' change (module doc)."""
    cb, ce = base["classes"], edited["classes"]
    out: dict = {"target_hit_rate": float(np.mean(ce[attribute] == k)),
                 "baseline_hit_rate": float(np.mean(cb[attribute] == k))}
    if attribute == "pitch" and k > 0:
        tgt = cm.bins.pitch_low_midi + k - 1
        vb, ve = cb["pitch"] > 0, ce["pitch"] > 0
        mb, me = _midi(base["values"]["pitch_hz"]), _midi(edited["values"]["pitch_hz"])
        out["baseline_median_midi"] = float(np.median(mb[vb])) if vb.any() else None
        out["edited_median_midi"] = float(np.median(me[ve])) if ve.any() else None
        out["target_midi"] = tgt
        out["baseline_distance"] = float(np.median(np.abs(mb[vb] - tgt))) if vb.any() else None
        out["edited_distance"] = float(np.median(np.abs(me[ve] - tgt))) if ve.any() else None
        out["voiced_fraction"] = float(ve.mean())
    else:
        out["baseline_distance"] = float(np.mean(np.abs(cb[attribute] - k)))
        out["edited_distance"] = float(np.mean(np.abs(ce[attribute] - k)))
    out["others"] = {}
    for other in ATTRIBUTES:
        if other == attribute:
            continue
        out["others"][other] = {"changed_fraction": float(np.mean(cb[other] != ce[other])),
                                "mean_abs_class_change": float(np.mean(np.abs(cb[other] - ce[other])))}
    return out


@dataclasses.dataclass
class LatentEditConfig:
    """`musiclens latent-edit`: push one attribute of an audio file toward a class."""

    audio: str = option(help="input audio file")
    cell: str = option(help="grid cell directory of `musiclens latent train` (SAE + probes)")
    to: str = option(help="target class: a note for pitch (C5, F#3), for loudness/timbre a class index or a value (1500Hz; a negative one needs '=': --to=-20dB)")
    out: str = option(help="output WAV file")
    attribute: str = option("pitch", help="attribute to push", choices=list(ATTRIBUTES))
    alpha: float = option(20.0, help="edit strength (feature units along the unit probe direction)")
    autoencoder: str | None = option(None, help="autoencoder (default: the one the SAE was trained on)")
    keep_error: bool = option(True, help="keep the SAE reconstruction error (edit = delta of SAE decodes)")
    seconds: float = option(30.0, help="edit at most this many seconds of the input", gt=0)
    measure: bool = option(True, help="measure the three attributes before/after and print them")
    overwrite: bool = option(False, help="replace an existing --out")


def run_edit(cfg: LatentEditConfig) -> dict:
    """The `latent-edit` command's work; returns a summary."""
    from ..audio import write_wav
    from ..extract.audio import AudioItem, Skip, load_clip

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    if out.suffix.lower() != ".wav":
        raise MusiclensError(f"--out must be a .wav file, got {out.name}")
    if not Path(cfg.audio).is_file():
        raise MusiclensError(f"audio file not found: {cfg.audio}")
    cm = load_control(cfg.cell, cfg.autoencoder)
    k = target_class(cm.bins, cfg.attribute, cfg.to)
    import soundfile as sf

    try:
        dur = sf.info(cfg.audio).duration
    except Exception as e:
        raise MusiclensError(f"unreadable audio {cfg.audio}: {str(e).splitlines()[0][:120]}")
    try:
        clip = load_clip(AudioItem(0, Path(cfg.audio).name, cfg.audio), cm.ae.sample_rate, min(cfg.seconds, dur),
                         min_seconds=0.05)
    except Skip as e:
        raise MusiclensError(f"{cfg.audio}: {e}")
    y = clip.audio[: clip.n_valid]
    y_edit = edit_audio(cm, y, cfg.attribute, k, cfg.alpha, cfg.keep_error)
    write_wav(out, y_edit, cm.ae.sample_rate)
    summary = {"out": str(out), "attribute": cfg.attribute, "target": cm.bins.class_names(cfg.attribute)[k],
               "target_class": k, "alpha": cfg.alpha, "seconds": len(y_edit) / cm.ae.sample_rate}
    if cfg.measure:
        base = measure(cm, edit_audio(cm, y, cfg.attribute, k, 0.0))
        summary["effect"] = compare(cm, base, measure(cm, y_edit), cfg.attribute, k)
    return summary


def sweep(cm: ControlModel, clips: list[np.ndarray], attribute: str, k: int, alphas: list[float],
          keep_error: bool = True, crepe_model: str = "tiny") -> dict:
    """Isolation sweep over held-out clips; figures are frame-weighted means over the clips."""
    bases = [measure(cm, edit_audio(cm, y, attribute, k, 0.0), crepe_model) for y in clips]
    rows = []
    for a in alphas:
        per = [compare(cm, b, measure(cm, edit_audio(cm, y, attribute, k, a, keep_error), crepe_model), attribute, k)
               for y, b in zip(clips, bases)]
        row = {"alpha": a}
        for key in ("target_hit_rate", "baseline_hit_rate", "baseline_distance", "edited_distance",
                    "baseline_median_midi", "edited_median_midi"):
            vals = [p[key] for p in per if p.get(key) is not None]
            if vals:
                row[key] = float(np.mean(vals))
        row["others"] = {o: {m: float(np.mean([p["others"][o][m] for p in per]))
                             for m in ("changed_fraction", "mean_abs_class_change")}
                         for o in per[0]["others"]}
        rows.append(row)
    return {"attribute": attribute, "target": cm.bins.class_names(attribute)[k], "target_class": k,
            "clips": len(clips), "keep_error": keep_error, "others": [o for o in ATTRIBUTES if o != attribute],
            "alphas": rows}


@dataclasses.dataclass
class EditSweepConfig:
    """`musiclens latent edit`: control-vector isolation sweep on held-out clips of a latent store."""

    cell: str = option(help="grid cell directory of `musiclens latent train` (SAE + probes)")
    store: str = option(help="latent store; its test-split clips (their source audio) are edited")
    to: str = option(help="target class (see latent-edit --to)")
    out: str = option(help="output directory (edit.json, edit.png, example WAVs)")
    attribute: str = option("pitch", help="attribute to push", choices=list(ATTRIBUTES))
    alphas: list[float] = option(default_factory=lambda: [1.0, 10.0, 20.0, 30.0], help="edit strengths")
    clips: int = option(4, help="number of held-out clips to edit", ge=1)
    seconds: float = option(5.0, help="seconds per clip", gt=0)
    keep_error: bool = option(True, help="keep the SAE reconstruction error")
    autoencoder: str | None = option(None, help="autoencoder (default: the one the SAE was trained on)")
    examples: bool = option(True, help="write the first clip's original and edited audio as WAVs")
    overwrite: bool = option(False, help="replace an existing --out")


def held_out_audio(store_path: str, sample_rate: int, n: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    """Audio of the first `n` test-split clips of a latent store, re-read from their source files."""
    from ..extract.audio import AudioItem, Skip, load_clip
    from ..store import ActivationStore

    store = ActivationStore(store_path)
    out = []
    for c in store.clips:
        meta = c.get("meta") or {}
        if meta.get("split") != "test" or not meta.get("source"):
            continue
        try:
            clip = load_clip(AudioItem(c["index"], c["id"], meta["source"]), sample_rate, seconds)
        except Skip:
            continue
        out.append((c["id"], clip.audio[: clip.n_valid]))
        if len(out) >= n:
            break
    if not out:
        raise MusiclensError(f"{store_path}: no readable test-split clips (their source audio must still exist)")
    return out


def run_sweep(cfg: EditSweepConfig) -> dict:
    from ..audio import write_wav
    from ..config import save_config
    from ..io import atomic_dir, write_json
    from .plots import plot_edit

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    check_values(cfg)  # the options' bounds, also for a config built in Python
    if not cfg.alphas:
        raise MusiclensError("--alphas needs at least one strength")
    cm = load_control(cfg.cell, cfg.autoencoder)
    k = target_class(cm.bins, cfg.attribute, cfg.to)
    clips = held_out_audio(cfg.store, cm.ae.sample_rate, cfg.clips, cfg.seconds)
    rep = sweep(cm, [y for _, y in clips], cfg.attribute, k, list(cfg.alphas), cfg.keep_error)
    rep["clip_ids"] = [cid for cid, _ in clips]
    rep["cell"] = str(cfg.cell)
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        save_config(cfg, tmp / "config.json")
        write_json(tmp / "edit.json", rep)
        plot_edit(rep, tmp / "edit.png")
        if cfg.examples:
            y = clips[0][1]
            write_wav(tmp / "original.wav", y, cm.ae.sample_rate)
            write_wav(tmp / "alpha0.wav", edit_audio(cm, y, cfg.attribute, k, 0.0), cm.ae.sample_rate)
            for a in cfg.alphas:
                write_wav(tmp / f"alpha{a:g}.wav", edit_audio(cm, y, cfg.attribute, k, a, cfg.keep_error),
                          cm.ae.sample_rate)
    return rep

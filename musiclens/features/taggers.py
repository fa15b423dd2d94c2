"""Pluggable audio taggers for classifier-based annotation.

A tagger is anything with `predict(y, sr) -> {head: label}` and a `name`.
Shipped: the organism's attribute tagger (`musiclens.measure.tagger.Tagger`,
heads instrument / drums / brightness / register / mode / dynamics). For
users with weights: any Hugging Face audio-classification model in a local
folder (`AutoModelForAudioClassification`, e.g. an AudioSet AST), whose
top-1 class becomes the head "<folder name>". Essentia's TensorFlow models
are not wrapped here: they need essentia-tensorflow, which is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError


class HFAudioTagger:
    """Top-1 class of a Hugging Face audio classifier (local folder or hub id)."""

    def __init__(self, path: str | Path, head: str | None = None):
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        try:
            self.fe = AutoFeatureExtractor.from_pretrained(str(path))
            self.model = AutoModelForAudioClassification.from_pretrained(str(path)).eval()
        except (OSError, ValueError) as e:
            raise MusiclensError(f"cannot load an audio classifier from {path}: {str(e).splitlines()[0]}")
        self.sr = int(getattr(self.fe, "sampling_rate", 16000))
        self.head = head or Path(str(path)).name or "hf"
        self.name = f"hf-classifier:{path}"

    @torch.no_grad()
    def predict(self, y: np.ndarray, sr: int) -> dict[str, str]:
        import librosa

        y = np.asarray(y, dtype=np.float32)
        if sr != self.sr:
            y = librosa.resample(y, orig_sr=sr, target_sr=self.sr)
        inputs = self.fe(y, sampling_rate=self.sr, return_tensors="pt")
        logits = self.model(**inputs).logits[0]
        return {self.head: str(self.model.config.id2label[int(logits.argmax())])}


class OrganismTagger:
    """The organism's attribute CNN (musiclens.measure.tagger)."""

    def __init__(self, path: str | None = None):
        try:
            from ..measure.tagger import Tagger
        except ImportError as e:
            raise MusiclensError(f"the organism tagger is not available ({e})")
        loader = getattr(Tagger, "load", None)
        self.tagger = loader(path) if (loader and path) else (loader() if loader else Tagger())
        self.name = "tagger:organism" + (f":{path}" if path else "")

    def predict(self, y: np.ndarray, sr: int) -> dict[str, str]:
        out = self.tagger.predict(y, sr)
        return {str(k): (v if isinstance(v, str) else str(v.get("label", v)) if isinstance(v, dict) else str(v))
                for k, v in out.items()}


def load_tagger(spec: str):
    """'organism' (default), a tagger folder of the organism kind, or a local HF audio classifier folder."""
    if spec in ("organism", "", None):
        return OrganismTagger()
    p = Path(spec)
    cfg = p / "config.json"
    if cfg.exists():
        try:
            data = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            raise MusiclensError(f"{cfg} is not valid JSON")
        if "architectures" in data or "model_type" in data:
            return HFAudioTagger(p)
        return OrganismTagger(str(p))
    if p.exists():
        raise MusiclensError(f"{spec}: no config.json; not a tagger folder")
    from ..models import looks_like_hub_id

    if not looks_like_hub_id(str(spec)):
        raise MusiclensError(f"tagger folder not found: {spec}")  # not "org/name": no hub retries
    return HFAudioTagger(spec)

"""Which caption words the organism's LM listens to, concept by concept.

The caption gap (`lm.conditioning_gap`) says how much the whole caption is
worth; it cannot say why a generation ignores "fast" while it obeys "dark".
Here each held-out clip's own caption is edited so that exactly one concept
says the opposite ("slow" -> "fast", "dark" -> "bright", "organ" ->
"trumpet", ...), everything else word for word the same, and the
teacher-forced loss of the clip's real codes is compared under both
captions. A concept the LM has learned makes its real audio less likely when
its words are flipped (gap > 0); a concept it ignores gives gap ≈ 0.

The loss is measured on the first `frames` frames, where the caption is the
only source of information (later frames can copy from the audio already
generated), so the figure speaks to what generation from a prompt does.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..corpus.captions import (BRIGHT_WORDS, DRUM_PHRASES, DYNAMIC_WORDS, INSTRUMENT_WORDS, MODE_PHRASES,
                               REGISTER_WORDS, TEMPO_WORDS)
from ..corpus.factors import tempo_word

# concept -> (synonym lists per value, value -> opposite value)
INSTRUMENTS = list(INSTRUMENT_WORDS)
FLIPS = {
    "instrument": (INSTRUMENT_WORDS, {v: INSTRUMENTS[(i + len(INSTRUMENTS) // 2) % len(INSTRUMENTS)]
                                      for i, v in enumerate(INSTRUMENTS)}),
    "tempo": (TEMPO_WORDS, {"slow": "fast", "fast": "slow"}),
    "brightness": (BRIGHT_WORDS, {"dark": "bright", "bright": "dark"}),
    "dynamics": (DYNAMIC_WORDS, {"soft": "loud", "loud": "soft"}),
    "register": (REGISTER_WORDS, {"low": "high", "high": "low"}),
    "mode": (MODE_PHRASES, {"major": "minor", "minor": "major"}),
    "drums": (DRUM_PHRASES, {"none": "rock", "rock": "none"}),
}
# the number written for "at N BPM" in a caption flipped to that tempo word
TEMPO_BPM = {"slow": 75, "moderate": 120, "fast": 165}


def _value(row: dict, concept: str) -> str | None:
    if concept == "tempo":
        return tempo_word(row["bpm"]) if "bpm" in row else None
    return row.get(concept)


def _spans(text: str, phrases) -> list[tuple[int, int, str]]:
    """Non-overlapping case-insensitive whole-word matches of `phrases`, longest phrase first."""
    taken: list[tuple[int, int, str]] = []
    for p in sorted(phrases, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text, flags=re.IGNORECASE):
            if all(m.end() <= a or m.start() >= b for a, b, _ in taken):
                taken.append((m.start(), m.end(), p))
    return taken


def concept_spans(text: str, phrases, shield_drums: bool = True) -> list[tuple[int, int, str]]:
    """`_spans` of `phrases`, minus those inside a drum phrase when `shield_drums`.

    Drum phrases reuse dynamics words ("with gentle drums", "a soft ride-cymbal
    groove"): read alone, they would count as asking for soft dynamics.
    """
    hits = _spans(text, phrases)
    if not shield_drums:
        return hits
    drums = _spans(text, [p for ps in DRUM_PHRASES.values() for p in ps])
    return [s for s in hits if all(s[1] <= a or s[0] >= b for a, b, _ in drums)]


def flip_caption(caption: str, row: dict, concept: str, to: str | None = None) -> str | None:
    """`caption` with `concept`'s words replaced by another value's; None if the caption doesn't name it.

    `to` is the value flipped to; by default the concept's opposite (FLIPS), which
    is what `concept_sensitivity` measures. The replacement is the synonym at the
    same index (so "leisurely" -> "lively" rather than always "fast"). Drum phrases
    are matched first and shielded, so "gentle" in "with gentle drums" is never
    read as dynamics.
    """
    words, opposite = FLIPS[concept]
    value = _value(row, concept)
    to = opposite.get(value) if to is None else to
    if value not in words or to is None or to == value:
        return None
    if to not in words:
        raise ValueError(f"{concept} has no value {to!r}")
    hits = concept_spans(caption, words[value], shield_drums=concept != "drums")
    bpm = list(re.finditer(r"at (\d+) BPM", caption)) if concept == "tempo" else []
    if not hits and not bpm:
        return None
    target = words[to]
    out = caption
    edits = [(a, b, target[words[value].index(p) % len(target)]) for a, b, p in hits]
    edits += [(m.start(), m.end(), f"at {TEMPO_BPM[to]} BPM") for m in bpm]
    for a, b, new in sorted(edits, reverse=True):
        old = out[a:b]
        out = out[:a] + (new[0].upper() + new[1:] if old[:1].isupper() else new) + out[b:]
    return out


def flip_pairs(rows: list[dict], idx, concept: str, every: bool = False) -> list[tuple[int, str]]:
    """(row index, flipped caption) for the rows of `idx` whose caption names `concept`.

    One pair per row, flipped to the opposite value; with `every`, one pair per
    other value of the concept, so middle values (moderate tempo, neutral
    brightness, light drums, mid register, medium dynamics) are contrasted too
    and the extremes are also told apart from the middle.
    """
    words, _ = FLIPS[concept]
    out = []
    for i in idx:
        row = rows[int(i)]
        for to in ([v for v in words if v != _value(row, concept)] if every else [None]):
            if (f := flip_caption(row["caption"], row, concept, to)) is not None:
                out.append((int(i), f))
    return out


def flip_gap(model, ids: torch.Tensor, own: tuple, flipped: tuple) -> torch.Tensor:
    """Per clip: teacher-forced loss of `ids` under the flipped caption minus under the own one.

    `own` and `flipped` are (states [B, L, 384], mask [B, L]) pairs. Used both to
    measure (`concept_sensitivity`) and to train (the tune stage's hinge, `lm.contrast_loss`).
    """
    from .lm import lm_loss

    return lm_loss(model, ids, *flipped)[1] - lm_loss(model, ids, *own)[1]


@torch.no_grad()
def concept_sensitivity(model, data, idx: np.ndarray, frames: int = 100, batch: int = 16,
                        concepts: tuple[str, ...] = tuple(FLIPS), encoder=None) -> dict:
    """Per concept: mean teacher-forced loss with the flipped caption minus with the own caption.

    `data` is an `lm.CodeData`; `idx` its held-out rows. Both captions go
    through the same frozen MiniLM call, so only the flipped words differ.
    `encoder`: a loaded (MiniLM, tokenizer) pair, for callers that measure often.
    Returns {concept: {gap, n, share_positive, p_sign}} (one-sided sign test).
    """
    from scipy.stats import binomtest

    from ..models.organism import load_text_encoder
    from .codes import caption_states

    model.eval()
    pad = model.config.decoder.pad_token_id
    encoder = encoder or load_text_encoder()
    out = {}
    for concept in concepts:
        pairs = flip_pairs(data.rows, idx, concept)
        diffs: list[float] = []
        for s in range(0, len(pairs), batch):
            part = pairs[s: s + batch]
            rows = np.array([i for i, _ in part])
            ids, _, _ = data.batch(rows, frames, pad, None)
            caps = [data.rows[i]["caption"] for i, _ in part] + [f for _, f in part]
            st, m = caption_states(caps, encoder=encoder)
            st, m = st.to(ids.device).float(), m.to(ids.device).long()  # the model's device (CUDA in a GPU tune)
            n = len(part)
            diffs += flip_gap(model, ids, (st[:n], m[:n]), (st[n:], m[n:])).tolist()
        d = np.array(diffs)
        pos = int((d > 0).sum())
        out[concept] = {"gap": round(float(d.mean()), 4) if len(d) else None, "n": len(d),
                        "share_positive": round(pos / len(d), 3) if len(d) else None,
                        "p_sign": float(binomtest(pos, len(d), 0.5, alternative="greater").pvalue) if len(d) else None}
    out["frames"] = frames
    return out

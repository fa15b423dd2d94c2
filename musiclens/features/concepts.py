"""The organism corpus's ground-truth concepts, as label texts and as clip labels.

Why one table: the CLAP annotator needs a text per concept value, the
benchmark needs each clip's value per concept, and label precision needs to
map a free-text label (an LLM's answer) back to concept values. Keeping the
three in one place keeps them consistent. Concepts: instrument (10 GM
instruments), tempo (slow / moderate / fast: thirds of 60-180 BPM), register,
dynamics, drums, mode and brightness: the corpus factors of musiclens.corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ConceptValue:
    head: str           # e.g. "instrument"
    value: str          # e.g. "piano"
    text: str           # label text for CLAP and reports
    keywords: tuple     # words that, found in a free-text label, mean this value

    @property
    def name(self) -> str:
        return f"{self.head}={self.value}"


_INSTRUMENT_KW = {
    "piano": ("piano",), "marimba": ("marimba", "mallet", "xylophone", "vibraphone"),
    "organ": ("organ",), "nylon guitar": ("guitar",), "acoustic bass": ("bass", "contrabass"),
    "violin": ("violin", "fiddle"), "string ensemble": ("strings", "string ensemble", "string section"),
    "trumpet": ("trumpet", "brass", "horn"), "flute": ("flute", "woodwind"),
    "square lead": ("square", "synth", "chiptune", "8-bit", "lead"),
}
_TEXTS = {
    ("tempo", "slow"): ("a slow tune", ("slow", "leisurely", "unhurried", "calm")),
    ("tempo", "moderate"): ("a moderate, mid-tempo tune", ("moderate", "mid-tempo", "medium tempo", "steady")),
    ("tempo", "fast"): ("a fast tune", ("fast", "up-tempo", "energetic", "brisk", "lively", "quick")),
    ("register", "low"): ("a low-register melody", ("low register", "low-pitched", "low pitch", "deep", "low")),
    ("register", "mid"): ("a mid-range melody", ("mid-range", "middle register", "mid register")),
    ("register", "high"): ("a high-pitched melody", ("high register", "high-pitched", "high pitch", "high")),
    ("dynamics", "soft"): ("played softly", ("soft", "quiet", "gentle", "delicate")),
    ("dynamics", "medium"): ("played at medium volume", ("medium volume", "moderately loud")),
    ("dynamics", "loud"): ("played loudly", ("loud", "forceful", "powerful")),
    ("drums", "none"): ("without drums", ("no drums", "without drums", "no percussion", "unaccompanied")),
    ("drums", "rock"): ("with a rock drum beat", ("rock", "drum kit", "backbeat", "snare", "bass drum", "drum beat")),
    ("drums", "light"): ("with light percussion", ("light percussion", "ride", "cymbal", "gentle drums")),
    ("mode", "major"): ("in a major key", ("major",)),
    ("mode", "minor"): ("in a minor key", ("minor",)),
    ("brightness", "dark"): ("a dark, muffled sound", ("dark", "muffled", "mellow", "warm", "dull")),
    ("brightness", "neutral"): ("a natural, clear sound", ("natural", "clear", "neutral")),
    ("brightness", "bright"): ("a bright, crisp sound", ("bright", "brilliant", "crisp", "airy", "trebly")),
}
TEMPO_BINS = ("slow", "moderate", "fast")


def concept_values() -> list[ConceptValue]:
    """All concept values of the corpus, instruments first."""
    from ..corpus.factors import HEADS

    out = [ConceptValue("instrument", v, f"{v} music" if v != "square lead" else "square-wave synth lead",
                        _INSTRUMENT_KW.get(v, (v,))) for v in HEADS["instrument"]]
    out += [ConceptValue("tempo", v, *_TEXTS[("tempo", v)]) for v in TEMPO_BINS]
    for head in ("register", "dynamics", "drums", "mode", "brightness"):
        for v in HEADS[head]:
            text, kw = _TEXTS.get((head, v), (f"{head} {v}", (v,)))
            out.append(ConceptValue(head, v, text, kw))
    return out


def clip_concepts(meta: dict) -> dict[str, str]:
    """A corpus clip's value per concept head (tempo binned from its BPM)."""
    from ..corpus.factors import tempo_word

    out = {h: str(meta[h]) for h in ("instrument", "register", "dynamics", "drums", "mode", "brightness") if h in meta}
    if "bpm" in meta:
        out["tempo"] = tempo_word(float(meta["bpm"]))
    return out


def match_label(label: str, values: list[ConceptValue] | None = None) -> list[ConceptValue]:
    """Concept values a free-text label names (keyword match on word boundaries).

    'bass' in 'bass drum' is not the instrument: keywords are matched longest
    first and a matched span is not reused by shorter keywords.
    """
    values = values or concept_values()
    text = " " + re.sub(r"[^a-z0-9\-]+", " ", (label or "").lower()) + " "
    hits: list[ConceptValue] = []
    pairs = sorted(((kw, v) for v in values for kw in v.keywords), key=lambda p: -len(p[0]))
    used = [False] * len(text)
    for kw, v in pairs:
        for m in re.finditer(r"(?<=[ ])" + re.escape(kw) + r"(?=[ ])", text):
            if any(used[m.start():m.end()]):
                continue
            for i in range(m.start(), m.end()):
                used[i] = True
            if v not in hits:
                hits.append(v)
    return hits

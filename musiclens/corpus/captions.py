"""Captions written from a clip's factors, with varied templates and synonyms.

A text-conditioned model should learn concepts, not one fixed sentence, so
each factor has several phrasings, several sentence shapes are used, and
each factor is named only with some probability (some captions name just an
instrument and a tempo). Neutral values (medium dynamics, mid register,
neutral brightness) are usually left unsaid, as people do.
"""

from __future__ import annotations

import numpy as np

from .factors import tempo_word

INSTRUMENT_WORDS = {
    "piano": ["piano", "grand piano", "acoustic piano"],
    "marimba": ["marimba", "wooden marimba", "mallet marimba"],
    "organ": ["organ", "church organ", "pipe organ"],
    "nylon guitar": ["nylon guitar", "classical guitar", "nylon-string guitar"],
    "acoustic bass": ["acoustic bass", "upright bass", "double bass"],
    "violin": ["violin", "solo violin", "fiddle"],
    "string ensemble": ["string ensemble", "strings", "string section"],
    "trumpet": ["trumpet", "brass trumpet", "solo trumpet"],
    "flute": ["flute", "concert flute", "solo flute"],
    "square lead": ["square lead", "square-wave synth", "chiptune synth lead"],
}
TEMPO_WORDS = {
    "slow": ["slow", "unhurried", "leisurely", "calm, slow"],
    "moderate": ["moderate", "mid-tempo", "steady", "walking-pace"],
    "fast": ["fast", "energetic", "lively", "brisk", "up-tempo"],
}
BRIGHT_WORDS = {"dark": ["dark", "muffled", "mellow", "warm, dark"],
                "neutral": ["natural-sounding", "clear"],
                "bright": ["bright", "brilliant", "crisp", "airy, bright"]}
REGISTER_WORDS = {"low": ["low", "deep", "low-register"],
                  "mid": ["mid-range", "middle-register"],
                  "high": ["high", "high-pitched", "high-register"]}
DYNAMIC_WORDS = {"soft": ["soft", "quiet", "gentle", "delicate"],
                 "medium": ["moderately loud", "medium-volume"],
                 "loud": ["loud", "powerful", "forceful"]}
MODE_PHRASES = {"major": ["in a major key", "in major", "in a happy major key"],
                "minor": ["in a minor key", "in minor", "in a sad minor key"]}
DRUM_PHRASES = {"none": ["without drums", "with no percussion", "solo, no drums"],
                "rock": ["with a rock beat", "over a rock drum groove", "with driving rock drums"],
                "light": ["with light percussion", "with a soft ride-cymbal groove", "with gentle drums"]}
NOUNS = {"chorale": ["chorale", "hymn", "chorale melody"],
         "folksong": ["folk tune", "folksong", "melody", "tune"]}

# probability that a factor is named at all (neutral values are named less often)
P_NAME = {"instrument": 0.9, "tempo": 0.75, "brightness": 0.6, "register": 0.5, "dynamics": 0.5,
          "mode": 0.55, "drums": 0.65}
P_NEUTRAL = 0.25


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def caption(clip: dict) -> str:
    """A caption for one clip plan (deterministic given `clip['caption_seed']`)."""
    rng = np.random.default_rng(clip["caption_seed"])
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731

    def named(factor: str, neutral: bool = False) -> bool:
        p = P_NAME[factor] * (P_NEUTRAL / 0.6 if neutral else 1.0)
        return bool(rng.random() < p)

    tw = tempo_word(clip["bpm"])
    adj = []
    if named("tempo", tw == "moderate"):
        adj.append(pick(TEMPO_WORDS[tw]))
    if named("dynamics", clip["dynamics"] == "medium"):
        adj.append(pick(DYNAMIC_WORDS[clip["dynamics"]]))
    if named("brightness", clip["brightness"] == "neutral"):
        adj.append(pick(BRIGHT_WORDS[clip["brightness"]]))
    if named("register", clip["register"] == "mid"):
        adj.append(pick(REGISTER_WORDS[clip["register"]]))
    inst = pick(INSTRUMENT_WORDS[clip["instrument"]]) if named("instrument") else None
    noun = pick(NOUNS[clip["collection"]])
    tails = []
    if named("mode"):
        tails.append(pick(MODE_PHRASES[clip["mode"]]))
    if named("drums", clip["drums"] == "none"):
        tails.append(pick(DRUM_PHRASES[clip["drums"]]))
    if rng.random() < 0.15:
        tails.append(f"at {int(round(clip['bpm']))} BPM")
    order = rng.permutation(len(tails))
    tails = [tails[i] for i in order]

    shape = rng.integers(4)
    if shape == 0 or inst is None:      # "a slow, dark organ chorale in a minor key"
        head = " ".join(x for x in [", ".join(adj), inst, noun] if x)
        text = f"{_article(head)} {head}"
        if tails:
            text += " " + ", ".join(tails)
    elif shape == 1:                    # "trumpet playing a lively, bright tune with a rock beat"
        head = " ".join(x for x in [", ".join(adj), noun] if x)
        text = f"{inst} playing {_article(head)} {head}"
        if tails:
            text += " " + ", ".join(tails)
    elif shape == 2:                    # "energetic bright trumpet tune with a rock beat"
        text = " ".join(x for x in [" ".join(adj), inst, noun] if x)
        if tails:
            text += " " + ", ".join(tails)
    else:                               # "folk tune on violin: slow, soft, in minor"
        text = f"{noun} on {inst}"
        rest = adj + tails
        if rest:
            text += ": " + ", ".join(rest)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text

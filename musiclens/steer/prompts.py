"""Neutral held-out prompts for steering experiments.

Steering is measured on prompts that name *none* of the steered concepts
(no tempo, brightness, dynamics or register words), so that any shift of
tempo or brightness comes from the vector, not from the text. The phrases
use the organism corpus's instrument vocabulary so the organism knows them.
(Prompt files are read with `musiclens.audio.read_prompts`.)
"""

from __future__ import annotations

INSTRUMENTS = ["piano", "marimba", "organ", "nylon guitar", "acoustic bass", "violin", "string ensemble",
               "trumpet", "flute", "square lead"]
FORMS = ["a {} melody", "a tune played on {}", "a {} folk tune", "a chorale on {}", "{} playing a hymn"]


def neutral_prompts(n: int, offset: int = 0) -> list[str]:
    """`n` neutral prompts (instrument x sentence form), deterministic; cycles past 50."""
    out = []
    for i in range(offset, offset + n):
        inst = INSTRUMENTS[i % len(INSTRUMENTS)]
        form = FORMS[(i // len(INSTRUMENTS)) % len(FORMS)]
        out.append(form.format(inst))
    return out


# Concept pairs for DiffMean, in the organism corpus's caption vocabulary:
# concept -> (positive side, negative side, metric that should move up for the positive side).
CONCEPTS = {
    "tempo": ("fast", "slow", "onset_rate"),
    "brightness": ("bright", "dark", "centroid"),
    "dynamics": ("loud", "soft", "loudness"),
    "register": ("high", "low", "pitch"),
}
_TEMPLATES = ["{a} {w} {i} {n}", "{i} playing {a} {w} {n}", "{w} {i} {n}", "{a} {w} {n} on {i}"]


def concept_prompts(concept: str, side: str, n: int) -> list[str]:
    """`n` prompts that name `side` ("fast", "dark", ...) of `concept` and nothing else steered.

    Words are the corpus caption synonyms (e.g. fast = fast / energetic /
    lively / brisk / up-tempo), combined with every instrument and a few
    sentence shapes, so Δ averages over wording and instrument.
    """
    from ..corpus.captions import BRIGHT_WORDS, DYNAMIC_WORDS, INSTRUMENT_WORDS, NOUNS, REGISTER_WORDS, TEMPO_WORDS
    from ..errors import MusiclensError

    words = {"tempo": TEMPO_WORDS, "brightness": BRIGHT_WORDS, "dynamics": DYNAMIC_WORDS,
             "register": REGISTER_WORDS}.get(concept)
    if words is None or side not in words:
        raise MusiclensError(f"unknown concept side {concept}/{side} (concepts: {', '.join(CONCEPTS)})")
    syn = words[side]
    insts = [v[0] for v in INSTRUMENT_WORDS.values()]
    nouns = [x for v in NOUNS.values() for x in v]
    out = []
    for k in range(n):
        w, i = syn[k % len(syn)], insts[(k // len(syn)) % len(insts)]
        t = _TEMPLATES[k % len(_TEMPLATES)]
        a = "an" if w[0] in "aeiou" else "a"
        out.append(t.format(a=a, w=w, i=i, n=nouns[(k // len(_TEMPLATES) + k) % len(nouns)]))
    return out

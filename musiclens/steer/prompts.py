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

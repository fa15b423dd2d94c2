"""Monophonic melody lines from music21's bundled corpus, parsed once and cached.

Why monophonic: one note at a time keeps CREPE pitch (register) and onset
counts (tempo) measurable, so every factor the renderer controls can be
checked in the audio. Two sources:

* Bach chorales: the soprano part (a clean, mostly-quarter-note line); the key
  is analysed on the full four-part score, which is far more reliable than on
  the melody alone.
* Essen folksongs (European collections only: the Chinese `han` sets are
  pentatonic, where major/minor is not meaningful). Each `.abc` file holds
  hundreds of tunes and parsing a whole file takes ~11 s, so the text is split
  at `X:` headers and only the tunes needed are parsed (~15 ms each).

A parsed piece is a small JSON record (note list in quarter lengths, key,
mode, median pitch) cached under `cache_dir`, so re-rendering never re-parses.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..io import write_json

CACHE_VERSION = 1

# European Essen collections (in a fixed order); see module docstring.
ESSEN_FILES = ["altdeu10", "altdeu20", "ballad10", "ballad20", "ballad30", "ballad40", "ballad50",
               "ballad60", "ballad70", "ballad80", "boehme10", "boehme20", "dva0", "erk5", "erk10",
               "erk20", "erk30", "fink0", "kinder0", "lux", "zuccal0"]


@dataclass
class Piece:
    """One melody line: notes as (onset, duration, midi) in quarter lengths."""

    source: str            # music21 corpus path, plus "#<X number>" for an Essen tune
    collection: str        # "chorale" | "folksong"
    key: str               # e.g. "G major"
    mode: str              # "major" | "minor"
    notes: list            # [[onset_ql, dur_ql, midi], ...] sorted by onset
    length_ql: float       # loop length (end of the last note, rounded up to a beat)

    @property
    def median_midi(self) -> float:
        import numpy as np

        return float(np.median([n[2] for n in self.notes]))


def default_cache_dir() -> Path:
    import os

    root = os.environ.get("MUSICLENS_CACHE") or Path.home() / ".cache" / "musiclens"
    return Path(root) / "scores"


def _corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def candidate_sources() -> list[str]:
    """All candidate source ids in a fixed order: chorale, folk, folk, chorale, ...

    Folksongs come from every collection in turn (tune 1 of each file, then
    tune 2, ...) so a small pool already spans regions and styles.
    """
    root = _corpus_root()
    chorales = sorted(p.stem for p in (root / "bach").glob("bwv*.mxl"))
    chorales = [f"bach/{c}.mxl" for c in chorales]
    per_file = []
    for name in ESSEN_FILES:
        path = root / "essenFolksong" / f"{name}.abc"
        if not path.exists():
            continue
        numbers = re.findall(r"(?m)^X:\s*(\d+)", path.read_text(encoding="latin-1"))
        per_file.append([f"essenFolksong/{name}.abc#{n}" for n in numbers])
    folk = []
    depth = max((len(x) for x in per_file), default=0)
    for i in range(depth):
        folk.extend(f[i] for f in per_file if i < len(f))
    out, ci, fi = [], 0, 0
    while ci < len(chorales) or fi < len(folk):
        if ci < len(chorales):
            out.append(chorales[ci])
            ci += 1
        for _ in range(2):
            if fi < len(folk):
                out.append(folk[fi])
                fi += 1
    return out


def _abc_tune(path: Path, number: str) -> str:
    text = path.read_text(encoding="latin-1")
    for chunk in re.split(r"(?m)^(?=X:)", text):
        m = re.match(r"X:\s*(\d+)", chunk)
        if m and m.group(1) == number:
            return chunk
    raise ValueError(f"tune X:{number} not found in {path}")


def _notes_of(stream) -> list:
    """(onset, duration, midi) of a melody stream; chords keep their top note."""
    notes = []
    for n in stream.stripTies().flatten().notes:
        dur = float(n.quarterLength)
        if dur <= 0:  # grace notes
            continue
        midi = max(p.midi for p in n.pitches)
        notes.append([float(n.offset), dur, int(midi)])
    notes.sort(key=lambda x: x[0])
    # drop overlaps (a monophonic line must not sound two notes at once)
    clean = []
    for on, d, m in notes:
        if clean and on < clean[-1][0] + 1e-6:
            continue
        if clean and clean[-1][0] + clean[-1][1] > on:
            clean[-1][1] = on - clean[-1][0]
        clean.append([on, d, m])
    return clean


def parse_source(source: str) -> Piece:
    """Parse one source id into a `Piece` (no caching)."""
    from music21 import converter

    root = _corpus_root()
    if source.startswith("bach/"):
        score = converter.parse(str(root / source))
        key = score.analyze("key")
        melody = score.parts[0]
        collection = "chorale"
    else:
        rel, number = source.split("#")
        score = converter.parse(_abc_tune(root / rel, number), format="abc")
        key = score.analyze("key")
        melody = score
        collection = "folksong"
    notes = _notes_of(melody)
    if len(notes) < 8:
        raise ValueError(f"{source}: only {len(notes)} notes")
    start = notes[0][0]
    notes = [[round(on - start, 6), round(d, 6), m] for on, d, m in notes]
    end = notes[-1][0] + notes[-1][1]
    length = float(int(end + 0.999))  # round up to a whole beat so loops stay on the beat grid
    mode = key.mode if key.mode in ("major", "minor") else "major"
    return Piece(source=source, collection=collection, key=f"{key.tonic.name} {mode}", mode=mode,
                 notes=notes, length_ql=length)


def _cache_file(cache_dir: Path, source: str) -> Path:
    h = hashlib.sha1(source.encode()).hexdigest()[:16]
    return cache_dir / f"v{CACHE_VERSION}" / f"{h}.json"


def load_piece(source: str, cache_dir: Path) -> Piece | None:
    """Cached `parse_source`; None for a piece that cannot be used (cached too)."""
    path = _cache_file(cache_dir, source)
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return None if data.get("bad") else Piece(**data["piece"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    try:
        piece = parse_source(source)
        write_json(path, {"piece": piece.__dict__})
        return piece
    except Exception as e:  # a malformed score in music21's corpus: remember and skip it
        write_json(path, {"bad": True, "source": source, "reason": str(e)[:200]})
        return None


def _load_star(args):
    return load_piece(*args)


def load_pool(n_pieces: int, cache_dir: Path, workers: int = 2, progress: bool = True) -> list[Piece]:
    """The first `n_pieces` usable pieces of `candidate_sources()` (parsed in parallel, cached)."""
    from tqdm import tqdm

    cands = candidate_sources()
    pool: list[Piece] = []
    pos = 0
    with tqdm(total=n_pieces, desc="scores", unit="piece", disable=None if progress else True) as bar:
        while len(pool) < n_pieces and pos < len(cands):
            need = n_pieces - len(pool)
            batch = cands[pos:pos + need + 4]
            pos += len(batch)
            todo = [(s, cache_dir) for s in batch]
            uncached = [t for t in todo if not _cache_file(cache_dir, t[0]).exists()]
            if workers > 1 and len(uncached) > 8:
                import multiprocessing as mp

                with mp.get_context("fork").Pool(workers) as p:
                    p.map(_load_star, uncached, chunksize=4)
            for t in todo:
                piece = load_piece(*t)
                if piece is not None and len(pool) < n_pieces:
                    pool.append(piece)
                    bar.update(1)
    return pool

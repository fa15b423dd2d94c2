"""Audio inputs for extraction: find them, decode them, reject the bad ones with a reason.

Why here and not in the model: the model wants exactly `seconds` of mono audio
at its codec's rate, while real collections hold stereo mp3s at 44.1 kHz, empty
or truncated files and digital silence. One bad file must never kill a
day-long extraction, so every problem becomes a *skip* with a reason (listed
in the store's `skipped.json`), and only problems with the input as a whole
(no such path, no audio at all) are errors.

Accepted inputs (`discover`):
- a folder of audio files (wav/flac/ogg/mp3, searched recursively). If it has a
  Hugging Face `audiofolder` metadata file (`metadata.jsonl` or `metadata.csv`
  with a `file_name` column), its caption column is used;
- a text file listing audio paths, one per line (relative to the list's folder;
  `#` starts a comment);
- a Hugging Face `datasets` folder written by `save_to_disk` (Dataset or
  DatasetDict) with an Audio column; audio bytes are decoded with soundfile,
  so `torchcodec` is not needed.

Decoding (`load_clip`): soundfile reads only the first `seconds` of the file,
channels are averaged (downmix), audio is resampled with soxr (librosa) to the
model's rate, then cut or zero-padded to exactly `seconds`. Padding is recorded
as `n_valid` samples so the extractor can drop frames that only saw padding.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MusiclensError

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
LIST_EXTS = (".txt", ".lst", ".list", ".m3u")
CAPTION_KEYS = ("caption", "text", "description", "prompt")
SILENCE_PEAK = 1e-4  # -80 dBFS: below this the clip is digital silence (or a dead channel)


@dataclass
class AudioItem:
    """One input clip. `index` is its position in the sorted input list (the store's clip index)."""

    index: int
    id: str
    source: str  # file path, or "<dataset folder>#<split>/<row>"
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    _open: Callable[[], object] | None = field(default=None, repr=False)  # file-like for dataset rows

    def open(self):
        return self._open() if self._open is not None else self.source


@dataclass
class Clip:
    """A decoded clip: mono float32 at the model rate, exactly `seconds` long."""

    item: AudioItem
    audio: np.ndarray
    n_valid: int  # samples of real audio (the rest is zero padding)
    orig_sr: int
    orig_seconds: float


class Skip(Exception):
    """A bad input file; the message is the reason recorded in skipped.json."""


def _caption_of(row: dict) -> str | None:
    for k in CAPTION_KEYS:
        if isinstance(row.get(k), str):
            return row[k]
    return None


def _read_metadata(path: Path) -> list[dict]:
    """Rows of a metadata.jsonl / .json (list) / .csv file."""
    if not path.exists():
        raise MusiclensError(f"captions file not found: {path}")
    try:
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                return list(csv.DictReader(f))
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else [data]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
        raise MusiclensError(f"cannot parse captions file {path}: {e}")


def caption_table(path: str | Path) -> dict[str, str]:
    """Map every way a metadata row names its clip (path, file_name, id, stem) to its caption."""
    table: dict[str, str] = {}
    for row in _read_metadata(Path(path)):
        cap = _caption_of(row)
        if cap is None:
            continue
        for key in ("path", "file_name", "file", "audio", "id"):
            v = row.get(key)
            if isinstance(v, (str, int)) and str(v) != "":
                v = str(v)
                table[v] = cap
                table[Path(v).name] = cap
                table[Path(v).stem] = cap
    return table


def _lookup(table: dict[str, str], rel: str) -> str | None:
    for k in (rel, Path(rel).name, Path(rel).stem):
        if k in table:
            return table[k]
    return None


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or
                              ((path / "state.json").exists() and (path / "dataset_info.json").exists()))


def _hf_items(path: Path) -> list[AudioItem]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise MusiclensError(f"cannot load the datasets folder {path}: {str(e).splitlines()[0]}")
    splits = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"": ds}
    items: list[AudioItem] = []
    for split in sorted(splits):
        d = splits[split]
        cols = [c for c, f in d.features.items() if isinstance(f, datasets.Audio)]
        if not cols:
            raise MusiclensError(f"{path}{'/' + split if split else ''} has no Audio column "
                                 f"(columns: {', '.join(d.column_names)})")
        d = d.cast_column(cols[0], datasets.Audio(decode=False))
        cap_col = next((k for k in CAPTION_KEYS if k in d.column_names), None)
        caps = d[cap_col] if cap_col else [None] * len(d)

        def opener(d=d, i=0, col=cols[0]):
            a = d[i][col]
            if a.get("bytes"):
                return io.BytesIO(a["bytes"])
            if a.get("path"):
                return a["path"]
            raise Skip("dataset row has neither audio bytes nor a path")

        for i in range(len(d)):
            rid = f"{split}/{i}" if split else str(i)
            items.append(AudioItem(index=0, id=rid, source=f"{path}#{rid}", caption=caps[i],
                                   meta={"split": split} if split else {},
                                   _open=lambda d=d, i=i, col=cols[0]: opener(d, i, col)))
    return items


def discover(path: str | Path, captions: str | Path | None = None) -> list[AudioItem]:
    """All input clips under `path`, sorted, each with a stable id and index.

    Raises MusiclensError when `path` does not exist or holds no audio at all.
    """
    path = Path(path)
    if not path.exists():
        raise MusiclensError(f"audio input not found: {path}")
    table = caption_table(captions) if captions else None
    if _is_hf_dataset(path):
        items = _hf_items(path)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if table is None:
            for meta_name in ("metadata.jsonl", "metadata.csv"):
                if (path / meta_name).exists():
                    table = caption_table(path / meta_name)
                    break
        items = [AudioItem(index=0, id=str(p.relative_to(path)), source=str(p)) for p in files]
    elif path.suffix.lower() in AUDIO_EXTS:
        items = [AudioItem(index=0, id=path.name, source=str(path))]
    elif path.suffix.lower() in LIST_EXTS or path.is_file():
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            raise MusiclensError(f"{path} is neither an audio file nor a text list of audio paths")
        items = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            p = Path(line).expanduser()
            p = p if p.is_absolute() else path.parent / p
            items.append(AudioItem(index=0, id=line, source=str(p)))
    else:  # pragma: no cover - exists() covered files and dirs
        raise MusiclensError(f"unsupported audio input: {path}")
    if not items:
        raise MusiclensError(f"no audio files ({'/'.join(e[1:] for e in AUDIO_EXTS)}) found in {path}")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MusiclensError(f"{path} lists {dup!r} more than once")
    for i, it in enumerate(items):
        it.index = i
        if table is not None:
            cap = _lookup(table, it.id)
            it.caption = cap if cap is not None else it.caption
    return items


def load_clip(item: AudioItem, sample_rate: int, seconds: float, min_seconds: float = 1.0) -> Clip:
    """Decode, downmix, resample and cut/pad one clip. Raises `Skip(reason)` for bad inputs."""
    import soundfile as sf

    src = item.open()
    if isinstance(src, str):
        p = Path(src)
        if not p.exists():
            raise Skip("file not found")
        if p.stat().st_size == 0:
            raise Skip("empty file (0 bytes)")
    try:
        with sf.SoundFile(src) as f:
            sr = f.samplerate
            total = f.frames
            want = int(np.ceil(seconds * sr)) + 1
            data = f.read(frames=min(want, total) if total > 0 else want, dtype="float32", always_2d=True)
    except Skip:
        raise
    except Exception as e:  # libsndfile's errors are RuntimeError / LibsndfileError / TypeError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Skip(f"unreadable: {msg[:160]}")
    if data.size == 0:
        raise Skip("empty (no audio samples)")
    if not np.isfinite(data).all():
        raise Skip("contains NaN or Inf samples")
    mono = data.mean(axis=1)
    orig_seconds = mono.shape[0] / sr
    if total > 0:
        orig_seconds = total / sr
    min_s = min(min_seconds, seconds)
    if orig_seconds < min_s:
        raise Skip(f"too short ({orig_seconds:.2f} s < {min_s:g} s)")
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        db = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        raise Skip(f"silent (peak {db} dBFS)")
    if sr != sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    n = int(round(seconds * sample_rate))
    n_valid = min(mono.shape[0], n)
    out = np.zeros(n, dtype=np.float32)
    out[:n_valid] = mono[:n_valid]
    return Clip(item=item, audio=out, n_valid=n_valid, orig_sr=int(sr), orig_seconds=float(orig_seconds))

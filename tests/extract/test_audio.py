"""Audio input discovery and decoding: folders, lists, datasets folders, bad files skipped with reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musiclens.errors import MusiclensError
from musiclens.extract.audio import Skip, discover, load_clip


def _tone(seconds: float, sr: int, f: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "b.wav", _tone(2.0, 44100, channels=2), 44100)
    sf.write(d / "sub" / "a.flac", _tone(1.5, 16000), 16000)
    sf.write(d / "c.ogg", _tone(1.2, 22050), 22050)
    sf.write(d / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "short.wav", _tone(0.2, 16000), 16000)
    (d / "empty.wav").write_bytes(b"")
    (d / "broken.mp3").write_bytes(b"\x00not audio" * 50)
    (d / "notes.txt").write_text("not audio")
    return d


def test_folder_discovery_is_sorted_recursive_and_indexed(folder):
    items = discover(folder)
    assert [it.id for it in items] == ["b.wav", "broken.mp3", "c.ogg", "empty.wav", "short.wav", "silent.wav",
                                       "sub/a.flac"]
    assert [it.index for it in items] == list(range(7))


def test_decode_downmix_resample_cut_pad(folder):
    by_id = {it.id: it for it in discover(folder)}
    c = load_clip(by_id["b.wav"], 16000, seconds=1.0)  # stereo 44.1 kHz, 2 s -> mono 16 kHz, cut to 1 s
    assert c.audio.shape == (16000,) and c.audio.dtype == np.float32 and c.n_valid == 16000
    assert c.orig_sr == 44100 and c.orig_seconds == pytest.approx(2.0)
    spec = np.abs(np.fft.rfft(c.audio[1000:-1000]))
    assert np.argmax(spec) * 16000 / (len(c.audio) - 2000) == pytest.approx(440, abs=3)
    c = load_clip(by_id["c.ogg"], 16000, seconds=2.0)  # 1.2 s -> padded with zeros to 2 s
    assert c.audio.shape == (32000,) and c.n_valid == 19200
    assert np.all(c.audio[19200:] == 0) and np.abs(c.audio[:19200]).max() > 0.3
    c = load_clip(by_id["sub/a.flac"], 16000, seconds=1.0)
    assert np.allclose(c.audio, _tone(1.0, 16000), atol=1e-4)  # flac at the model rate: unchanged


@pytest.mark.parametrize("name,reason", [("silent.wav", "silent"), ("short.wav", "too short"),
                                         ("empty.wav", "empty"), ("broken.mp3", "unreadable")])
def test_bad_files_are_skipped_with_a_reason(folder, name, reason):
    item = next(it for it in discover(folder) if it.id == name)
    with pytest.raises(Skip, match=reason):
        load_clip(item, 16000, seconds=1.0, min_seconds=0.5)


def test_file_list_and_captions(tmp_path, folder):
    lst = tmp_path / "files.txt"
    lst.write_text(f"# my clips\n{folder}/c.ogg\naudio/sub/a.flac\n\naudio/missing.wav\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"path": "audio/sub/a.flac", "caption": "a sine"}) + "\n"
                    + json.dumps({"id": "c", "caption": "an ogg"}) + "\n")
    items = discover(lst, captions=meta)
    assert [it.caption for it in items] == ["an ogg", "a sine", None]
    assert load_clip(items[1], 16000, 1.0).n_valid == 16000
    with pytest.raises(Skip, match="not found"):
        load_clip(items[2], 16000, 1.0)


def test_audiofolder_metadata_gives_captions(tmp_path):
    d = tmp_path / "af"
    d.mkdir()
    sf.write(d / "x.wav", _tone(1.0, 16000), 16000)
    (d / "metadata.csv").write_text("file_name,text\nx.wav,solo flute\n")
    assert [it.caption for it in discover(d)] == ["solo flute"]


def test_datasets_folder(tmp_path, folder):
    datasets = pytest.importorskip("datasets")
    rows = {"audio": [{"bytes": (folder / "c.ogg").read_bytes(), "path": "c.ogg"},
                      {"bytes": (folder / "silent.wav").read_bytes(), "path": "silent.wav"}],
            "caption": ["ogg tone", "nothing"]}
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "ds"))
    items = discover(tmp_path / "ds")
    assert [(it.id, it.caption) for it in items] == [("train/0", "ogg tone"), ("train/1", "nothing")]
    c = load_clip(items[0], 16000, seconds=1.0)
    assert c.orig_sr == 22050 and np.abs(c.audio).max() > 0.3
    with pytest.raises(Skip, match="silent"):
        load_clip(items[1], 16000, seconds=1.0)


def test_input_errors(tmp_path):
    with pytest.raises(MusiclensError, match="not found"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no audio here")
    with pytest.raises(MusiclensError, match="no audio files"):
        discover(tmp_path / "empty")

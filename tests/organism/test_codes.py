"""organism/codes.py: caption states."""

import subprocess
import sys


def test_the_caption_progress_bar_stays_out_of_logs():
    """A `desc` asks for a bar on a terminal; written to a file or pipe (a log), tqdm stays silent."""
    code = ("from musiclens.organism.codes import caption_states; "
            "s, m = caption_states(['a slow organ tune', ''], desc='captions (MiniLM)'); "
            "assert s.shape[0] == m.shape[0] == 2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "captions (MiniLM)" not in r.stderr

"""Assemble README.md from docs/README.head.md, the per-stage docs/*.md (headings shifted one level) and docs/README.tail.md.

The stage docs are the source: edit them, then run `python tools/assemble_readme.py`.
"""
from pathlib import Path
root = Path(__file__).resolve().parent.parent
parts = ["models-and-hooks", "extraction", "sae", "discovery", "steering", "corpus", "organism", "latent"]
titles = {"models-and-hooks": "Models and hooks"}

def shift(text):
    out, fence = [], False
    for ln in text.splitlines():
        if ln.lstrip().startswith("```"):
            fence = not fence
        if not fence and ln.startswith("#"):
            ln = "#" + ln
        out.append(ln)
    return "\n".join(out).strip() + "\n"

doc = [(root / "docs/README.head.md").read_text().strip() + "\n"]
doc.append("\n## Contents\n\n" + "\n".join(
    f"- [{titles.get(p) or (root/'docs'/f'{p}.md').read_text().splitlines()[0].lstrip('# ')}](#{p})" for p in parts) + "\n- [Development](#development)\n")
for p in parts:
    text = (root / "docs" / f"{p}.md").read_text()
    if p in titles:
        text = f"# {titles[p]}\n\n" + text
    doc.append(f'\n<a id="{p}"></a>\n\n' + shift(text))
tail = root / "docs/README.tail.md"
if tail.exists():
    doc.append("\n" + tail.read_text().strip() + "\n")
(root / "README.md").write_text("\n".join(doc))
print(len("\n".join(doc).splitlines()), "lines")

#!/usr/bin/env bash
# Keep tracked folders out of a device call's working tree, and put them back afterwards.
#
# A device call copies the tracked files, the untracked files git does not ignore, and the
# carried paths, 64 MiB in all. The shipped organism (musiclens/assets/organism, 40 MB) is tracked,
# and the LM pack (gpu/lm, 43 MiB) plus the wheels (.whl) do not fit beside it. The GPU stages never
# read it (the pack holds the codes and the codec), so for the call it stops being tracked:
#   hide PATH...     git rm --cached (the files stay on disk) + an ignore line in .git/info/exclude,
#                    so the path is neither tracked nor untracked-and-unignored. Refuses a path
#                    with uncommitted changes: `restore` resets the index to HEAD.
#   restore          undo every hide: index back from HEAD, the exclude lines removed.
#   size [CARRY...]  MiB that would travel: tracked + untracked-unignored files (+ shared/) + CARRY.
# Run from the repository root:
#   bash tools/device_tree.sh hide musiclens/assets/organism && bash tools/device_tree.sh size .whl gpu/lm
#   (device call, carry [.whl, gpu/lm]) ... then: bash tools/device_tree.sh restore
# Until `restore`, `git status` shows the folder as deleted: do not commit in between.
set -euo pipefail
MARK="# musiclens device_tree.sh"
EXCLUDE="$(git rev-parse --git-path info/exclude)"
LIST="$(git rev-parse --git-path musiclens_device_hidden)"

bytes() {  # sum of the sizes of the NUL-separated paths on stdin that exist as files
  python3 -c "import os, sys; print(sum(os.path.getsize(p) for p in sys.stdin.buffer.read().split(b'\0') if p and os.path.isfile(p)))"
}

case "${1:-}" in
  hide)
    shift
    [ $# -gt 0 ] || { echo "usage: device_tree.sh hide PATH..." >&2; exit 2; }
    for p in "$@"; do
      p="${p%/}"
      [ -n "$(git ls-files -- "$p")" ] || { echo "device_tree: $p holds no tracked file" >&2; exit 2; }
      git diff --quiet HEAD -- "$p" || { echo "device_tree: $p has uncommitted changes; commit them first" >&2; exit 2; }
    done
    mkdir -p "$(dirname "$EXCLUDE")"
    for p in "$@"; do
      p="${p%/}"
      git rm -r -q --cached -- "$p"
      printf '%s\n/%s/\n' "$MARK" "$p" >> "$EXCLUDE"   # git allows no comment after a pattern
      echo "$p" >> "$LIST"
      echo "hidden: $p (on disk, untracked and ignored until: bash tools/device_tree.sh restore)"
    done
    ;;
  restore)
    [ -f "$LIST" ] || { echo "device_tree: nothing hidden"; exit 0; }
    while IFS= read -r p; do
      git reset -q HEAD -- "$p"
      echo "restored: $p"
    done < "$LIST"
    awk -v m="$MARK" '$0 == m { skip = 1; next } skip { skip = 0; next } { print }' "$EXCLUDE" > "$EXCLUDE.tmp"
    mv "$EXCLUDE.tmp" "$EXCLUDE"
    rm -f "$LIST"
    ;;
  size)
    shift
    tree=$( { git ls-files -z --cached --others --exclude-standard; if [ -d shared ]; then find shared -type f -print0; fi; } | bytes)
    carry=0
    if [ $# -gt 0 ]; then carry=$(find "$@" -type f -print0 | bytes); fi
    python3 -c "import sys; t, c = int(sys.argv[1]), int(sys.argv[2]); m = 2 ** 20
print(f'tree {t / m:.2f} MiB + carry {c / m:.2f} MiB = {(t + c) / m:.2f} MiB of 64 MiB' + ('' if t + c <= 64 * m else ': TOO LARGE'))
sys.exit(0 if t + c <= 64 * m else 1)" "$tree" "$carry"
    ;;
  *)
    echo "usage: device_tree.sh hide PATH... | restore | size [CARRY...]" >&2; exit 2 ;;
esac

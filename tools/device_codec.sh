#!/usr/bin/env bash
# Train the organism's codec, or fine-tune the shipped organism's decoder, on a lent GPU machine,
# one device call at a time (docs/organism.md, "Training the codec on a lent GPU").
#
# It runs there, from the repository root, as the command of a device call that carries `.whl`
# (the wheels of librosa, soundfile and their dependencies, which the machine lacks) and a pack
# shard `gpu/packN` made here by `musiclens organism pack`. Each call:
#   1. installs the carried wheels, once (the machine has torch and transformers);
#   2. gathers every shard carried so far into one corpus folder, gpu/corpus;
#   3. STAGE=codec (default): trains a new codec for $MINUTES minutes into $RUN, resuming what
#      the previous call left;
#      STAGE=decoder: fine-tunes the decoder of the shipped organism's codec (read from the
#      tracked musiclens/assets/organism/musicgen, so nothing more travels) with the codes frozen,
#      so the trained LM stays valid and the result ships without retraining it;
#   4. leaves under $OUT the stage's log and config, and its HF export as a tar split into
#      15 MB parts (a file that comes back may hold at most 16 MB): codec_hf.tar.part-* or
#      decoder_hf.tar.part-*.
# The machine keeps gpu/ only while it is warm (30 s after a call): send the next call at once.
# Arguments go to `musiclens organism train`, e.g. --codec-filters 32 --codec-w-adv 0.2 ...
#
# VARIANTS=FILE instead trains several codecs at once, one process each, sharing the GPU (these
# small models leave most of an H100/H200 idle, so two or three runs cost about what one does).
# Each line of FILE is `NAME ARGS...` (ARGS for `musiclens organism train`, added to the
# command's own); `#` lines are skipped. Each variant trains into $RUN/NAME, and everything comes
# back as one tar, variants.tar.part-*, holding each variant's log, config, progress, console
# output and HF export (float16 for the trip when HALF=1: `organism.pack.set_export_dtype` widens
# it again here), plus summary.txt with every variant's exit status and last log line.
# Before any training a preflight (imports, one clip read, the GPU) fails within seconds.
# Environment: STAGE (codec), MINUTES (8), RUN (gpu/run), DEVICE (cuda), PYTHON (python3),
# VARIANTS (unset), HALF (0), OUT (required).
set -euo pipefail
STAGE=${STAGE:-codec}
MINUTES=${MINUTES:-8}
RUN=${RUN:-gpu/run}
DEVICE=${DEVICE:-cuda}
VARIANTS=${VARIANTS:-}
HALF=${HALF:-0}
PY=${PYTHON:-python3}
: "${OUT:?OUT must name the folder whose files come back}"
case "$STAGE" in codec|decoder) ;; *) echo "STAGE must be codec or decoder, not '$STAGE'" >&2; exit 2;; esac
source "$(dirname "${BASH_SOURCE[0]}")/device_setup.sh"

shards=(gpu/pack*/)
[ -d "${shards[0]}" ] || { echo "no pack shard under gpu/ (make one with: musiclens organism pack)" >&2; exit 2; }
rm -rf gpu/corpus && mkdir -p gpu/corpus/audio
for d in "${shards[@]}"; do
  for f in "$d"audio/*; do ln -s "$PWD/$f" gpu/corpus/audio/; done
  cat "$d"metadata.jsonl >> gpu/corpus/metadata.jsonl
done
echo "corpus: $(wc -l < gpu/corpus/metadata.jsonl) clips from ${#shards[@]} shard(s)"

if [ "$STAGE" = decoder ] && [ ! -f "$RUN/codec/hf/config.json" ]; then
  # the decoder stage starts from RUN/codec/hf: here, the codec inside the shipped organism
  "$PY" -c "
from pathlib import Path
from musiclens.latent.autoencoders import organism_codec
from musiclens.organism.codec import export_codec
export_codec(organism_codec(), Path('$RUN/codec/hf'))
print('decoder stage starts from the shipped organism codec')"
fi

"$PY" - "$DEVICE" <<'PYEOF' || { echo "preflight failed" >&2; exit 3; }
import glob, sys, time
t = time.time()
import numpy as np, soundfile as sf, torch
import musiclens.organism.losses, musiclens.organism.codec  # librosa, transformers' EnCodec
f = sorted(glob.glob("gpu/corpus/audio/*"))[0]
y, sr = sf.read(f, dtype="float32")
assert sr == 16000 and len(y) > 0 and np.isfinite(y).all(), (f, sr, len(y))
if sys.argv[1].startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA device"
    print("gpu:", torch.cuda.get_device_name(0))
print(f"preflight ok in {time.time() - t:.1f} s ({f}: {len(y) / sr:.1f} s at {sr} Hz)")
PYEOF

if [ -n "$VARIANTS" ]; then
  [ -f "$VARIANTS" ] || { echo "VARIANTS file not found: $VARIANTS" >&2; exit 2; }
  names=(); pids=()
  while read -r name args; do
    case "$name" in ''|'#'*) continue;; esac
    mkdir -p "$RUN/$name"
    resume=()
    [ -f "$RUN/$name/$STAGE/ckpt.pt" ] && resume=(--resume)
    # shellcheck disable=SC2086  # ARGS are words on purpose
    OMP_NUM_THREADS=4 "$PY" -m musiclens organism train --corpus gpu/corpus --out "$RUN/$name" --stage "$STAGE" \
      --device "$DEVICE" --minutes "$MINUTES" "${resume[@]}" "$@" $args < /dev/null > "$RUN/$name/console.log" 2>&1 &
    names+=("$name"); pids+=($!)
    echo "started $name (pid $!): $args"
  done < "$VARIANTS"
  [ ${#names[@]} -gt 0 ] || { echo "no variant in $VARIANTS" >&2; exit 2; }
  : > "$OUT/summary.txt"
  files=()
  for i in "${!names[@]}"; do
    n=${names[$i]}; rc=0
    wait "${pids[$i]}" || rc=$?
    d="$RUN/$n/$STAGE"
    if [ "$HALF" = 1 ] && [ -f "$d/hf/model.safetensors" ]; then
      export_dtype "$d/hf" float16 || rc=4
    fi
    echo "$n: exit $rc; last log: $(tail -n 1 "$d/log.jsonl" 2>/dev/null)" | tee -a "$OUT/summary.txt"
    tail -n 5 "$RUN/$n/console.log" >> "$OUT/summary.txt"
    for f in log.jsonl config.json progress.json hf; do [ -e "$d/$f" ] && files+=("$n/$STAGE/$f"); done
    files+=("$n/console.log")
  done
  tar -C "$RUN" -cf - "${files[@]}" | split -b 15m - "$OUT/variants.tar.part-"
  ls -l "$OUT"
  exit 0
fi

resume=()
[ -f "$RUN/$STAGE/ckpt.pt" ] && resume=(--resume)
"$PY" -m musiclens organism train --corpus gpu/corpus --out "$RUN" --stage "$STAGE" --device "$DEVICE" \
  --minutes "$MINUTES" "${resume[@]}" "$@"

cp "$RUN/$STAGE/log.jsonl" "$RUN/$STAGE/config.json" "$OUT/"
tar -C "$RUN/$STAGE" -cf - hf | split -b 15m - "$OUT/${STAGE}_hf.tar.part-"
ls -l "$OUT"

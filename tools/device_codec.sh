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
# Environment: STAGE (codec), MINUTES (8), RUN (gpu/run), DEVICE (cuda), PYTHON (python3),
# OUT (required).
set -euo pipefail
STAGE=${STAGE:-codec}
MINUTES=${MINUTES:-8}
RUN=${RUN:-gpu/run}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
: "${OUT:?OUT must name the folder whose files come back}"
case "$STAGE" in codec|decoder) ;; *) echo "STAGE must be codec or decoder, not '$STAGE'" >&2; exit 2;; esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$PY" -c "import librosa, soundfile" 2>/dev/null; then
  "$PY" -m pip install --no-deps --no-index --quiet .whl/*.whl
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__,
'| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

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

resume=()
[ -f "$RUN/$STAGE/ckpt.pt" ] && resume=(--resume)
"$PY" -m musiclens organism train --corpus gpu/corpus --out "$RUN" --stage "$STAGE" --device "$DEVICE" \
  --minutes "$MINUTES" "${resume[@]}" "$@"

cp "$RUN/$STAGE/log.jsonl" "$RUN/$STAGE/config.json" "$OUT/"
tar -C "$RUN/$STAGE" -cf - hf | split -b 15m - "$OUT/${STAGE}_hf.tar.part-"
ls -l "$OUT"

#!/usr/bin/env bash
# Train the organism's language model (lm stage, then tune stage) on a lent GPU machine, in one call
# (docs/organism.md, "Training the language model on a lent GPU").
#
# It runs there, from the repository root, as the command of a device call that carries `.whl`
# (librosa, soundfile and their dependencies) and a folder made here by `musiclens organism pack-lm`
# (codes, codec in float16 with its encoder and decoder zeroed, trimmed MiniLM). The call:
#   1. installs the carried wheels, once (the machine has torch and transformers);
#   2. builds a run folder $RUN from the pack: codes, codec widened back to float32, and the
#      MiniLM unpacked, named by MUSICLENS_MINILM for every stage; a pack made with
#      `pack-lm --init FOLDER` also holds that LM (init_hf), and the lm stage then continues it
#      (--lm-init) instead of starting from random weights;
#   3. preflight: the MiniLM, the codes and the GPU, within seconds;
#   4. `organism train --stage text` (the caption states, made there: too large to carry),
#      then `--stage lm` for LM_MINUTES and `--stage tune` for TUNE_MINUTES, each on a schedule
#      of minutes (`--schedule-minutes`), so both anneal whatever the machine's speed;
#   5. leaves under $OUT lm.tar.part-*: each stage's log, config, progress and HF export
#      (float16 for the trip; `organism.pack.set_export_dtype` widens it again here), and
#      summary.txt.
# Arguments go to both stages (the model's shape, batch, ...); TUNE_ARGS only to the tune stage.
# Environment: PACK (gpu/lm), RUN (gpu/lmrun), LM_MINUTES (2.5), TUNE_MINUTES (1.5), TUNE_ARGS (""),
# DEVICE (cuda), PYTHON (python3), OUT (required).
set -euo pipefail
PACK=${PACK:-gpu/lm}
RUN=${RUN:-gpu/lmrun}
LM_MINUTES=${LM_MINUTES:-2.5}
TUNE_MINUTES=${TUNE_MINUTES:-1.5}
TUNE_ARGS=${TUNE_ARGS:-}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
: "${OUT:?OUT must name the folder whose files come back}"
[ -f "$PACK/pack.json" ] || { echo "no LM pack in $PACK (make one with: musiclens organism pack-lm)" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/device_setup.sh"

if [ ! -f "$RUN/codec/hf/config.json" ]; then
  mkdir -p "$RUN/codes" "$RUN/codec" "$RUN/minilm"
  for f in "$PACK/codes/"*.gz; do gunzip -c "$f" > "$RUN/codes/$(basename "$f" .gz)"; done
  cp -r "$PACK/codec_hf" "$RUN/codec/hf"
  # pack-lm gzips the codec with its decoder zeroed (never used here; the real codec goes back at home)
  if [ -f "$RUN/codec/hf/model.safetensors.gz" ]; then gunzip "$RUN/codec/hf/model.safetensors.gz"; fi
  tar -xzf "$PACK/minilm.tar.gz" -C "$RUN/minilm"
  export_dtype "$RUN/codec/hf" float32
  if [ -d "$PACK/init_hf" ]; then
    cp -r "$PACK/init_hf" "$RUN/init_hf"
    gunzip "$RUN/init_hf/model.safetensors.gz"
    export_dtype "$RUN/init_hf" float32
  fi
fi
LM_INIT=()
[ -d "$RUN/init_hf" ] && LM_INIT=(--lm-init "$RUN/init_hf")
export MUSICLENS_MINILM="$PWD/$RUN/minilm"

"$PY" - "$DEVICE" "$RUN" <<'PYEOF' || { echo "preflight failed" >&2; exit 3; }
import sys, time
from pathlib import Path
t = time.time()
import torch
from musiclens.models import organism as O
from musiclens.organism.codes import caption_states, load_codes
codes, _, rows = load_codes(Path(sys.argv[2]), text=False)
st, m = caption_states([r["caption"] for r in rows[:8]], sys.argv[1])
assert st.shape[0] == 8 and torch.isfinite(st.float()).all()
if sys.argv[1].startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA device"
print(f"preflight ok in {time.time() - t:.1f} s: {len(rows)} clips of codes {tuple(codes['codes'].shape)}")
PYEOF

train() { "$PY" -m musiclens organism train --corpus "$PACK" --out "$RUN" --device "$DEVICE" "$@"; }
[ -f "$RUN/codes/text.safetensors" ] || train --stage text
rc=0
train --stage lm --schedule-minutes "$LM_MINUTES" "${LM_INIT[@]}" "$@" || rc=$?
# shellcheck disable=SC2086  # TUNE_ARGS are words on purpose
[ $rc = 0 ] && { train --stage tune --schedule-minutes "$TUNE_MINUTES" "$@" $TUNE_ARGS || rc=$?; }

: > "$OUT/summary.txt"
files=(config.json)
for s in lm tune; do
  d="$RUN/$s"
  [ -d "$d" ] || continue
  if [ -f "$d/hf/model.safetensors" ]; then
    export_dtype "$d/hf" float16
  fi
  echo "$s: last log: $(tail -n 1 "$d/log.jsonl" 2>/dev/null)" | tee -a "$OUT/summary.txt"
  for f in log.jsonl config.json progress.json hf; do [ -e "$d/$f" ] && files+=("$s/$f"); done
done
echo "exit $rc" >> "$OUT/summary.txt"
tar -C "$RUN" -cf - "${files[@]}" | split -b 15m - "$OUT/lm.tar.part-"
ls -l "$OUT"
exit $rc

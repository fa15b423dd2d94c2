#!/usr/bin/env bash
# Build, from a fresh checkout, everything the LM's device call carries (docs/organism.md,
# "Training the language model on a lent GPU"), so a session that is lent a GPU can start this
# first, in the background, and make the call as soon as it ends. No device time is used.
#
#   1. `make setup` (the venv), if it is not there yet;
#   2. the shipped codec exported into $RUN/codec/hf (the codes must be the shipped codec's, and
#      `polish.install_codec` reads it back after the call);
#   3. the 12,000-clip corpus (`corpus render --resume`: about 6 min on 2 cores);
#   4. its train and valid codes (`organism train --stage codes --resume`: about 35 min);
#   5. the pack (`organism pack-lm --init` the shipped LM, so the call continues it; INIT= empty for an LM
#      from scratch, as codes of another codec need: docs/organism.md, "Why the LM loses a beat it is given");
#   6. the wheels the device lacks, into .whl (pip download; skipped when .whl holds them);
#   7. the shipped organism and bench/results hidden from the call's tree, the total checked against 64 MiB.
# Every step skips or resumes what is already done, so it may be run again after an interruption.
# After the call: `bash tools/device_tree.sh restore` (do not commit before it).
# Environment: CORPUS (data/corpus12k), RUN (runs/gpu19), PACK (gpu/lm), INIT (the shipped LM; empty: none).
# A RUN whose codec/hf exists keeps it (e.g. a causal codec trained with --codec-causal).
set -euo pipefail
CORPUS=${CORPUS:-data/corpus12k}
RUN=${RUN:-runs/gpu19}
PACK=${PACK:-gpu/lm}
BIN=.venv/bin
SHIPPED=musiclens/assets/organism
INIT=${INIT-$SHIPPED/musicgen}

[ -x "$BIN/musiclens" ] || make setup
step() { echo "== $* ($(date +%H:%M:%S))"; }

step "shipped codec -> $RUN/codec/hf"
if [ ! -f "$RUN/codec/hf/config.json" ]; then
  mkdir -p "$RUN/codec"
  "$BIN/python" -c "from pathlib import Path; from musiclens.latent.autoencoders import organism_codec; \
from musiclens.organism.codec import export_codec; export_codec(organism_codec(), Path('$RUN/codec/hf'))"
fi

step "corpus -> $CORPUS"
"$BIN/musiclens" corpus render --out "$CORPUS" --clips 12000 --seed 0 --resume

step "codes -> $RUN/codes"
"$BIN/musiclens" organism train --corpus "$CORPUS" --out "$RUN" --stage codes --resume

step "pack -> $PACK"
if [ ! -f "$PACK/pack.json" ]; then
  "$BIN/musiclens" organism pack-lm --run "$RUN" --out "$PACK" ${INIT:+--init "$INIT"}
fi

step "wheels -> .whl"
if ! ls .whl/librosa-*.whl >/dev/null 2>&1; then
  "$BIN/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl librosa==0.11.0 soundfile==0.14.0 cffi pycparser audioread soxr==1.1.0 pooch decorator platformdirs
fi

step "the call's tree"
# the device stages read neither the shipped organism (the pack holds its LM and codec) nor the
# measured results (12 MiB of JSON and figures), so both stay home; one `hide` checks every path
# before it hides any, so uncommitted changes in either leave both where they were
tracked=()
for p in "$SHIPPED" bench/results; do
  [ -z "$(git ls-files -- "$p")" ] || tracked+=("$p")
done
[ ${#tracked[@]} -eq 0 ] || bash tools/device_tree.sh hide "${tracked[@]}"
bash tools/device_tree.sh size .whl "$PACK"
cat <<EOF
Ready. One device call, carry [.whl, $PACK], timeout_s 600:
  LM_MINUTES=5 TUNE_MINUTES=1.5 TUNE_ARGS="--tune-lr 0.0005 --contrast-concepts tempo,drums,register,dynamics,brightness --contrast-flips all" bash tools/device_lm.sh --lm-batch-size 64 --lm-layers 8 --lm-d-model 192 --lm-dropout 0.1 --lm-eval-every 500${INIT:+ --lm-lr 0.001}
Then: bash tools/device_tree.sh restore   (and "Back here" in docs/organism.md, with RUN=$RUN)
EOF

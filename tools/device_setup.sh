# Sourced by tools/device_codec.sh and tools/device_lm.sh (after PY and OUT are set): what every
# device call needs first. The lent GPU machine has torch and transformers but not librosa or
# soundfile, so the wheels carried in .whl are installed once; the versions are printed for the log.
# export_dtype FOLDER float16|float32 rewrites an HF export for the trip (organism.pack.set_export_dtype).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import librosa, soundfile" 2>/dev/null; then
  "$PY" -m pip install --no-deps --no-index --quiet .whl/*.whl
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__,
'| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

export_dtype() {
  "$PY" -c "import sys; from musiclens.organism.pack import set_export_dtype; set_export_dtype(sys.argv[1], sys.argv[2])" "$1" "$2"
}

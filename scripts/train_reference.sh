#!/usr/bin/env bash
# Train the reference checkpoints listed in reference/README.md.
#
#   scripts/train_reference.sh digits          # LeNet-5 on sklearn digits      (~15 s on 2 CPU cores)
#   scripts/train_reference.sh fashion-mnist   # LeNet-5 on Fashion-MNIST       (~3 min)
#   scripts/train_reference.sh cifar10         # ResNet-20 on CIFAR-10, Cutout   (~80 min with bf16 + AMX, 2 threads)
#   scripts/train_reference.sh cifar10-plain20 # Plain-20 on CIFAR-10 (AMC's other model; ~80 min)
#   scripts/train_reference.sh cifar10-resnet56  # ResNet-56 on CIFAR-10 (AMC's model; ~4 h with bf16 + AMX, 2 threads)
#   scripts/train_reference.sh cifar10-kd      # the ResNet-20 reference: distilled from reference/resnet56-cifar10.pt (~2.2 h)
#   scripts/train_reference.sh cifar10-kd-ft   # resnet20-cifar10.pt fine-tuned 30 epochs with KD from ResNet-56 (~30 min)
#   scripts/train_reference.sh all
#
# Environment: FMNIST_DIR (default /work/shared/datasets/fashion-mnist, or Debian's
# /usr/share/datasets/fashion-mnist), CIFAR_TARBALL (default /work/shared/datasets/cifar10-jpeg.tar.gz),
# DATA_DIR (default data/, gitignored), DEVICE (default auto), THREADS (default 1: deterministic and
# gentle on shared machines; the CIFAR-10 reference used THREADS=2), PRECISION (CIFAR-10 only, default
# bf16: ~3.5x faster on CPUs with AVX-512 BF16 / AMX; set fp32 elsewhere), CUTOUT (CIFAR-10 only,
# default 16 pixels; 0 for the plain crop + flip recipe, copied to reference/MODEL-cifar10-nocutout.pt),
# KD_TEACHER (cifar10-kd*, default reference/resnet56-cifar10.pt), KD_ALPHA (default 0.9), KD_T (default 4),
# INIT (cifar10-kd-ft, default reference/resnet20-cifar10.pt), FT_EPOCHS (default 30), FT_LR (default 0.02).
# Runs go to runs/ref-* (gitignored); --resume continues a killed run.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST_DIR=${FMNIST_DIR:-/work/shared/datasets/fashion-mnist}
CIFAR_TARBALL=${CIFAR_TARBALL:-/work/shared/datasets/cifar10-jpeg.tar.gz}
DATA_DIR=${DATA_DIR:-data}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-bf16}
CUTOUT=${CUTOUT:-16}
COMMON=(--device "$DEVICE" --threads "$THREADS" --seed 0 --resume)

digits() {
  amc train --model lenet5 --dataset digits --epochs 30 --lr 0.05 --batch-size 32 --no-augment \
    "${COMMON[@]}" --run-dir runs/ref-lenet5-digits
  cp runs/ref-lenet5-digits/final.pt reference/lenet5-digits.pt
}

fashion_mnist() {
  amc train --model lenet5 --dataset fashion-mnist --data-dir "$FMNIST_DIR" --epochs 30 --lr 0.05 --wd 1e-4 \
    --batch-size 128 "${COMMON[@]}" --run-dir runs/ref-lenet5-fashion-mnist
  cp runs/ref-lenet5-fashion-mnist/final.pt reference/lenet5-fashion-mnist.pt
}

# The default recipe (Cutout 16) makes the reference file; other Cutout sizes get a tagged one.
cutout_suffix() {
  case "$CUTOUT" in 16) echo "" ;; 0) echo "-nocutout" ;; *) echo "-cutout$CUTOUT" ;; esac
}

extract_cifar() {
  if [ ! -d "$DATA_DIR/cifar10-jpeg" ]; then
    mkdir -p "$DATA_DIR"
    tar xzf "$CIFAR_TARBALL" -C "$DATA_DIR"
  fi
}

# cifar_reference MODEL: MODEL on CIFAR-10 -> reference/MODEL-cifar10.pt. He et al. 2016 recipe with a
# cosine schedule: SGD 0.1, Nesterov 0.9, wd 5e-4, batch 128, 150 epochs, crop + flip + Cutout 16
# (DeVries & Taylor 2017), bf16 autocast in the NHWC memory format (weights stay fp32).
cifar_reference() {
  local model=$1 run_dir="runs/ref-$1-cifar10-$PRECISION-cutout$CUTOUT"
  extract_cifar
  amc train --model "$model" --dataset cifar10 --data-dir "$DATA_DIR" --epochs 150 --lr 0.1 --wd 5e-4 \
    --batch-size 128 --cutout "$CUTOUT" --precision "$PRECISION" --channels-last "${COMMON[@]}" --run-dir "$run_dir"
  cp "$run_dir/final.pt" "reference/$model-cifar10$(cutout_suffix).pt"
}

# require FILE...: stop with the command that makes a missing reference checkpoint.
require() {
  local f
  for f in "$@"; do
    if [ ! -f "$f" ]; then
      echo "$f not found: train it first (scripts/train_reference.sh cifar10 for ResNet-20, cifar10-resnet56" \
        "for ResNet-56)" >&2
      exit 1
    fi
  done
}

# teacher_tag reference/resnet56-cifar10.pt -> resnet56
teacher_tag() {
  local tag
  tag=$(basename "$1" .pt)
  echo "${tag%%-*}"
}

# cifar_distilled: ResNet-20 with the same recipe, distilled (Hinton KD) from a stronger CIFAR-10 teacher
# -> reference/resnet20-cifar10-kd-TEACHER[-nocutout|-cutoutN][-aALPHA-tT].pt. The checkpoint records its teacher's sha256.
cifar_distilled() {
  local teacher=${KD_TEACHER:-reference/resnet56-cifar10.pt} alpha=${KD_ALPHA:-0.9} temp=${KD_T:-4}
  local tag
  tag=$(teacher_tag "$teacher")
  require "$teacher"
  extract_cifar
  local run_dir="runs/ref-resnet20-cifar10-$PRECISION-cutout$CUTOUT-kd-$tag-a$alpha-t$temp"
  amc train --model resnet20 --dataset cifar10 --data-dir "$DATA_DIR" --epochs 150 --lr 0.1 --wd 5e-4 \
    --batch-size 128 --cutout "$CUTOUT" --teacher "$teacher" --kd-alpha "$alpha" --kd-temperature "$temp" \
    --precision "$PRECISION" --channels-last "${COMMON[@]}" --run-dir "$run_dir"
  local suffix
  suffix=$(cutout_suffix)
  [ "$alpha" = 0.9 ] && [ "$temp" = 4 ] || suffix="$suffix-a$alpha-t$temp"
  cp "$run_dir/final.pt" "reference/resnet20-cifar10-kd-$tag$suffix.pt"
}

# cifar_kd_finetune: continue a finished ResNet-20 (INIT) for FT_EPOCHS more epochs, distilled from KD_TEACHER,
# with a fresh cosine schedule from FT_LR -> reference/resnet20-cifar10-kdft-TEACHER[-nocutout|-cutoutN].pt.
# The checkpoint records both its starting weights (meta.init) and its teacher (meta.teacher) by sha256.
cifar_kd_finetune() {
  local teacher=${KD_TEACHER:-reference/resnet56-cifar10.pt} init=${INIT:-reference/resnet20-cifar10.pt}
  local epochs=${FT_EPOCHS:-30} lr=${FT_LR:-0.02} alpha=${KD_ALPHA:-0.9} temp=${KD_T:-4} tag
  tag=$(teacher_tag "$teacher")
  require "$teacher" "$init"
  extract_cifar
  local run_dir="runs/ref-resnet20-cifar10-$PRECISION-cutout$CUTOUT-kdft-$tag-e$epochs-lr$lr"
  amc train --model resnet20 --dataset cifar10 --data-dir "$DATA_DIR" --init "$init" --epochs "$epochs" --lr "$lr" \
    --wd 5e-4 --batch-size 128 --cutout "$CUTOUT" --teacher "$teacher" --kd-alpha "$alpha" --kd-temperature "$temp" \
    --precision "$PRECISION" --channels-last "${COMMON[@]}" --run-dir "$run_dir"
  cp "$run_dir/final.pt" "reference/resnet20-cifar10-kdft-$tag$(cutout_suffix).pt"
}

case "${1:-all}" in
  digits) digits ;;
  fashion-mnist) fashion_mnist ;;
  cifar10) cifar_reference resnet20 ;;
  cifar10-resnet56) cifar_reference resnet56 ;;
  cifar10-plain20) cifar_reference plain20 ;;
  cifar10-kd) cifar_distilled ;;
  cifar10-kd-ft) cifar_kd_finetune ;;
  all) digits; fashion_mnist; cifar_reference resnet20 ;;
  *) echo "usage: $0 [digits|fashion-mnist|cifar10|cifar10-resnet56|cifar10-plain20|cifar10-kd|cifar10-kd-ft|all]" >&2; exit 2 ;;
esac

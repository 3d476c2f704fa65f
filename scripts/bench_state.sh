#!/usr/bin/env bash
# Save or restore the state of a benchmark that spans sessions (see bench_state/README.md).
#   scripts/bench_state.sh save r20-proxy      # bench_out/r20-proxy -> bench_state/r20-proxy (no search checkpoints)
#   scripts/bench_state.sh restore r20-proxy   # bench_state/r20-proxy -> bench_out/r20-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-}; name=${2:-}
if [[ -z "$action" || -z "$name" || "$name" == */* ]]; then
    echo "error: usage: scripts/bench_state.sh save|restore NAME (a folder of bench_out/)" >&2; exit 2
fi
case "$action" in
save)
    [[ -d "bench_out/$name" ]] || { echo "error: bench_out/$name does not exist" >&2; exit 2; }
    tmp="bench_state/.$name.tmp"
    rm -rf "$tmp"; mkdir -p bench_state; cp -r "bench_out/$name" "$tmp"
    # finished searches are read from their summaries; their resumable state is not needed again
    find "$tmp" -type d -name checkpoint -path '*/search-*/checkpoint' -prune -exec rm -rf {} +
    find "$tmp" -name '*.journal' -delete
    # a finished fine-tune is read from its summary (model.amc is the model); its training state is not needed
    find "$tmp" -name finetune_summary.json -printf '%h\n' | while read -r d; do rm -f "$d/last.pt" "$d/final.pt"; done
    rm -rf "bench_state/$name"; mv "$tmp" "bench_state/$name"
    # a file git ignores would not reach the next session: say so rather than lose it (session 14 lost
    # two fine-tunes' run folders to the repository's `runs/` rule)
    ignored=$(git ls-files --others --ignored --exclude-standard -- "bench_state/$name" | head -5)
    if [[ -n "$ignored" ]]; then
        echo "error: git ignores these files of bench_state/$name, so a commit would not keep them:" >&2
        echo "$ignored" >&2; echo "       rename them or add an exception to .gitignore" >&2; exit 2
    fi
    du -sh "bench_state/$name";;
restore)
    [[ -d "bench_state/$name" ]] || { echo "error: bench_state/$name does not exist" >&2; exit 2; }
    if [[ -e "bench_out/$name" ]]; then
        echo "error: bench_out/$name exists; move it away first (nothing is overwritten)" >&2; exit 2
    fi
    mkdir -p bench_out; cp -r "bench_state/$name" "bench_out/$name"; echo "restored bench_out/$name";;
*)
    echo "error: unknown action '$action': save or restore" >&2; exit 2;;
esac

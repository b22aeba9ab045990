#!/usr/bin/env bash
# Every README example, as written, in a scratch folder beside the checkout's runs/ (cleaned first).
# Reproduce: bash docs/bench/spine/readme_examples.sh > docs/bench/spine/readme_examples.txt 2>&1
set -u
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1
rm -rf runs/gold runs/prefs runs/generate /tmp/sft-demo /tmp/sft-py /tmp/distill /tmp/icl-votek /tmp/readme-loop
C=.venv/bin/curate
step() { local t=$(date +%s); echo "### $*"; "$@" > /tmp/readme-step.log 2>&1; local rc=$?; tail -4 /tmp/readme-step.log | sed 's/^/    /'; echo "    -> exit $rc in $(( $(date +%s) - t )) s"; }
step ./run demo
step $C run recipes/reviews-gold.yaml --dry-run
step $C run recipes/reviews-gold.yaml --out runs/gold --set acquire.strategy=margin
step $C resume runs/gold
step $C export runs/gold
step $C select sample:reviews --strategy kcenter --budget 10 --out /tmp/to_label.jsonl
step $C score curate/data/sample_pool.jsonl --kind options --options positive,negative --template "Is the sentiment of this review positive or negative?\nReview: {text}\nAnswer with one word." --chat --out /tmp/scored.jsonl
step $C index build curate/data/sample_pool.jsonl --out /tmp/reviews-index
step $C index query /tmp/reviews-index --text "the battery died quickly" -k 3
# The README's Python blocks, extracted and run as written.
.venv/bin/python - <<'PY'
import re, pathlib
blocks = re.findall(r"```python\n(.*?)```", pathlib.Path("README.md").read_text(), re.S)
pathlib.Path("/tmp/readme-py").mkdir(exist_ok=True)
for k, b in enumerate(blocks):
    pathlib.Path(f"/tmp/readme-py/block{k}.py").write_text(b)
print(len(blocks), "python blocks")
PY
for f in /tmp/readme-py/block*.py; do step .venv/bin/python "$f"; done
step $C icl select recipes/icl-reviews-knn.yaml --out /tmp/prompts.jsonl
step $C icl eval recipes/icl-reviews-knn.yaml --out /tmp/icl-eval.json
step $C icl annotate recipes/icl-reviews-votek.yaml --out /tmp/icl-votek
step $C prefs run recipes/prefs-gold.yaml --dry-run
step $C prefs run recipes/prefs-gold.yaml --out runs/prefs --set stop.rounds=3
step $C resume runs/prefs --set stop.rounds=4
step $C prefs export runs/prefs --out /tmp/pairs.jsonl
step $C generate --task "movie review sentiment" --labels positive,negative --n 20 --dedup-against sample:reviews --out /tmp/generated.jsonl
step $C run recipes/reviews-generate.yaml --out runs/generate
step $C sft run recipes/sft-instructions.yaml --out /tmp/sft-demo
step $C sft curate sample:instructions --budget 20 --score ifd --min-distance 0.25 --out /tmp/picked.jsonl
step $C distill run recipes/distill-gsm8k.yaml --dry-run
step $C distill run recipes/distill-gsm8k.yaml --out /tmp/distill --set stop.rounds=2 --set eval.accuracy_size=5
step $C distill run recipes/distill-gsm8k.yaml --out /tmp/distill --set stop.rounds=3 --no-eval
# The full grid takes 17+ minutes and its small-text peers need the bench extra (pip install 'curate[bench]',
# which the README names): a smoke of two curate cells through the same command.
step $C bench recipes/bench-classification.yaml --out /tmp/bench-cls-smoke --threads 1 --limit 2 --no-speed --set "grid.dataset=[sst2]" --set "grid.strategy=[random,margin]" --set "grid.seed=[0]"
step $C bench report /tmp/bench-cls-smoke

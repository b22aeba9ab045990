"""Active SFT: buy responses for the instructions the model is least sure how to answer, let it
answer the easy rest itself (self-training), and LoRA-tune it with TRL's ``SFTTrainer`` each round;
or curate an existing instruction set in one shot (``curate sft curate``: IFD / Ask-LLM scores
with DEITA's diversity rule).
"""

from __future__ import annotations

from curate.plugins import Paradigm

__all__ = ["PARADIGM"]


PARADIGM = Paradigm(name="sft", summary="active SFT: uncertainty queries + self-training, or one-shot curation",
                    load_config="curate.paradigms.sft.config:load_sft_config", build="curate.paradigms.sft.run:build",
                    report="curate.paradigms.sft.cli:report", actions="curate.paradigms.sft.cli:add_actions",
                    bench_runner="curate.paradigms.sft.bench:SFTRunner")

"""The four paradigms (icl, sft, preference, distill), each built on curate's core; the core never imports them."""

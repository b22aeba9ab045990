"""Active sft paradigm (built in a later issue)."""

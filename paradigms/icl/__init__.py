"""Active icl paradigm (built in a later issue)."""

"""Active distill paradigm (built in a later issue)."""

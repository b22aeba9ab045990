"""Active preference paradigm (built in a later issue)."""

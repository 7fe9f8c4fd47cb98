"""Sub-commands of the ``spikequant`` CLI (one module each, discovered automatically)."""

"""Data: synthetic dialogues, imports of other formats, dedup, the style audit and mixes."""

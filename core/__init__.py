"""The row format both sides share: the error hierarchy, the schema gate, the content hash, and the one
JSONL reader (file:line errors) with atomic writes. Depends on the standard library only (orjson when
installed); everything else in Quimbot builds on it."""

"""Quimbot's training side: the data row format, its schema gate and content hash."""

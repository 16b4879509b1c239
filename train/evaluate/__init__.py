"""Evaluation: pedagogy metrics, checkpoint comparison as teachers, replay of flagged turns, calibration."""

"""Evaluation: retrieval metrics, INQUIRE Rerank / Fullrank, the ANN benchmark and the comparison report."""

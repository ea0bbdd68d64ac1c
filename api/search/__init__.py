"""Semantic and hybrid search, and the embedding worker that keeps it fed."""

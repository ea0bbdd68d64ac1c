"""Semantic and hybrid search, and the embedding worker that keeps it fed.

May import: `api.core`, `api.journal`, `api.auth`, `embeddings`.
"""

"""Blobs: presigned uploads/downloads in S3-compatible storage, tracked in Postgres.

May import: `api.core`, `api.journal`, `api.auth`.
"""

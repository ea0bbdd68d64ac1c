"""Blobs: presigned uploads/downloads in S3-compatible storage, tracked in Postgres."""

"""Workstation sync (SYNC_PROTOCOL.md): push, pull, bootstrap, status, and pruning.

May import: `api.core`, `api.journal`, `api.auth`.
"""

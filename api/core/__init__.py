"""Plumbing: settings, errors, observability, resources, request dependencies, background
loops, the blob store client, JSON bodies, pagination and the migrations runner.

May import: `graph`, `relational` and libraries; no other part of `api`.
"""

"""The world model: world nodes and edges (`/world-model/*`) and the ontology.

May import: `api.core`, `api.journal`, `api.auth`.
"""

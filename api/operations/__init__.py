"""Operations (`/operations`): what drones do in a venue, journaled like the graph.

May import: `api.core`, `api.journal`, `api.auth`.
"""

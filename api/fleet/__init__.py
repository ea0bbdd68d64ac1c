"""The fleet: kits and drones (registry, journaled into the graph) and their telemetry.

May import: `api.core`, `api.journal`, `api.auth`.
"""

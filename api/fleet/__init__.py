"""The fleet: kits and drones (registry, journaled into the graph) and their telemetry."""

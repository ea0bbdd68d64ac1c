// Baseline graph schema. Every node carries customer_id (tenant) and version
// (the journal version of its last change); ids are client-generated UUIDs,
// unique across tenants.

CREATE CONSTRAINT schema_migration_version IF NOT EXISTS
FOR (m:SchemaMigration) REQUIRE m.version IS UNIQUE;

CREATE CONSTRAINT venue_id IF NOT EXISTS FOR (n:Venue) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT world_node_id IF NOT EXISTS FOR (n:WorldNode) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT operation_id IF NOT EXISTS FOR (n:Operation) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT kit_id IF NOT EXISTS FOR (n:Kit) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT drone_id IF NOT EXISTS FOR (n:Drone) REQUIRE n.id IS UNIQUE;

// Sync order: everything a tenant changed after version V.
CREATE INDEX venue_customer_version IF NOT EXISTS FOR (n:Venue) ON (n.customer_id, n.version);
CREATE INDEX world_node_customer_version IF NOT EXISTS FOR (n:WorldNode) ON (n.customer_id, n.version);
CREATE INDEX operation_customer_version IF NOT EXISTS FOR (n:Operation) ON (n.customer_id, n.version);
CREATE INDEX kit_customer_version IF NOT EXISTS FOR (n:Kit) ON (n.customer_id, n.version);
CREATE INDEX drone_customer_version IF NOT EXISTS FOR (n:Drone) ON (n.customer_id, n.version);

// Per-venue listings.
CREATE INDEX world_node_customer_venue IF NOT EXISTS FOR (n:WorldNode) ON (n.customer_id, n.venue_id);
CREATE INDEX operation_customer_venue IF NOT EXISTS FOR (n:Operation) ON (n.customer_id, n.venue_id);
CREATE INDEX venue_customer_name IF NOT EXISTS FOR (n:Venue) ON (n.customer_id, n.name);

// "Near a point" venue filters.
CREATE POINT INDEX venue_location IF NOT EXISTS FOR (n:Venue) ON (n.location);

// Text search (hybrid search fuses these with the vector indexes).
CREATE FULLTEXT INDEX venue_text IF NOT EXISTS FOR (n:Venue) ON EACH [n.name, n.description, n.address];
CREATE FULLTEXT INDEX world_node_text IF NOT EXISTS FOR (n:WorldNode) ON EACH [n.name, n.description];

// Semantic search: all-MiniLM-L6-v2 embeddings.
CREATE VECTOR INDEX venue_embedding IF NOT EXISTS FOR (n:Venue) ON (n.embedding)
OPTIONS {indexConfig: {`vector.dimensions`: 384, `vector.similarity_function`: 'cosine'}};
CREATE VECTOR INDEX world_node_embedding IF NOT EXISTS FOR (n:WorldNode) ON (n.embedding)
OPTIONS {indexConfig: {`vector.dimensions`: 384, `vector.similarity_function`: 'cosine'}};

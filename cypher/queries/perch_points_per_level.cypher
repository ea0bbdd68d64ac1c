// name: perch_points_per_level
// description: Perch points of a venue per level: those a level CONTAINS directly or through its zones and rooms (up to three CONTAINS steps).
// param: venue_id uuid -- the venue
// param: sample int 0..100 = 10 -- perch points listed per level
MATCH (l:WorldNode:Level) WHERE l.customer_id = $customer_id AND l.venue_id = $venue_id
OPTIONAL MATCH (l)-[rels:CONTAINS*1..3]->(p:PerchPoint)
  WHERE p.customer_id = $customer_id AND all(r IN rels WHERE r.customer_id = $customer_id)
WITH l, collect(DISTINCT p) AS perches
RETURN l.id AS level_id, l.name AS level, size(perches) AS perch_points,
       [p IN perches | {id: p.id, name: p.name}][0..$sample] AS examples
ORDER BY l.z, l.name

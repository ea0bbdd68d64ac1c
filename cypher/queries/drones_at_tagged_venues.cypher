// name: drones_at_tagged_venues
// description: Drones that flew operations at venues carrying a tag (e.g. stadium), with how many operations and where.
// param: tag string -- venue tag, e.g. stadium
// param: status string = null -- only operations in this status (planned, active, paused, completed, aborted, failed)
// param: limit int 1..500 = 100
MATCH (v:Venue) WHERE v.customer_id = $customer_id AND v.version >= 0 AND $tag IN v.tags
MATCH (o:Operation)-[:AT]->(v) WHERE o.customer_id = $customer_id
  AND ($status IS NULL OR o.status = $status)
MATCH (o)-[:USED]->(d:Drone) WHERE d.customer_id = $customer_id
RETURN d.id AS drone_id, d.serial AS serial, d.model AS model,
       count(DISTINCT o) AS operations, collect(DISTINCT v.name) AS venues,
       max(o.started_at) AS last_started_at
ORDER BY operations DESC, serial
LIMIT $limit

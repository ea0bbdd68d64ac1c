// name: hazards_near_entrances
// description: Hazards within a distance of a venue's entrances and exits (by position), or linked to one by a NEAR or ADJACENT_TO fact, closest first.
// param: venue_id uuid -- the venue
// param: max_distance_m float 0..1000 = 15 -- how close counts as near, in metres
// param: limit int 1..500 = 100
MATCH (e:WorldNode) WHERE e.customer_id = $customer_id AND e.venue_id = $venue_id
  AND (e:Entrance OR e:Exit)
MATCH (h:WorldNode:Hazard) WHERE h.customer_id = $customer_id AND h.venue_id = $venue_id
OPTIONAL MATCH (h)-[link:NEAR|ADJACENT_TO]-(e) WHERE link.customer_id = $customer_id
WITH e, h, count(link) > 0 AS linked,
     CASE WHEN e.x IS NULL OR h.x IS NULL THEN null
          ELSE sqrt((e.x - h.x)^2 + (e.y - h.y)^2 + (coalesce(e.z, 0.0) - coalesce(h.z, 0.0))^2)
     END AS distance
WHERE linked OR distance <= $max_distance_m
RETURN e.id AS entrance_id, e.name AS entrance, h.id AS hazard_id, h.name AS hazard,
       h.description AS hazard_description, round(distance, 2) AS distance_m, linked
ORDER BY coalesce(distance, 0.0), entrance, hazard
LIMIT $limit

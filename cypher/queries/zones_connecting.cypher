// name: zones_connecting
// description: The shortest route between two named zones of a venue (names match case-insensitively), with every node on the way; only current CONNECTS_TO, ADJACENT_TO and LEADS_TO facts are walked.
// param: venue_id uuid -- the venue
// param: from_zone string -- name of the zone to start from
// param: to_zone string -- name of the zone to reach
// param: max_hops int 1..12 = 12 -- longest route considered
MATCH (a:WorldNode:Zone) WHERE a.customer_id = $customer_id AND a.venue_id = $venue_id
  AND toLower(a.name) = toLower($from_zone)
MATCH (b:WorldNode:Zone) WHERE b.customer_id = $customer_id AND b.venue_id = $venue_id
  AND toLower(b.name) = toLower($to_zone) AND b <> a
MATCH p = shortestPath((a)-[:CONNECTS_TO|ADJACENT_TO|LEADS_TO*..12]-(b))
WHERE all(r IN relationships(p) WHERE r.customer_id = $customer_id
          AND (r.valid_to IS NULL OR r.valid_to > datetime()))
  AND length(p) <= $max_hops
RETURN a.name AS from_zone, b.name AS to_zone, length(p) AS hops,
       [n IN nodes(p) | {id: n.id, name: n.name, kind: n.kind}] AS route,
       [n IN nodes(p)[1..-1] WHERE n:Zone | n.name] AS zones_between
ORDER BY hops

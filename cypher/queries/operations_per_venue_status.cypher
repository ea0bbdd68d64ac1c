// name: operations_per_venue_status
// description: How many operations each venue had, per status, over the last N days (operations without a start time always count).
// param: days int 1..3650 = 365 -- look-back window
MATCH (o:Operation)-[:AT]->(v:Venue)
WHERE o.customer_id = $customer_id AND o.version >= 0 AND v.customer_id = $customer_id
  AND (o.started_at IS NULL OR o.started_at >= datetime() - duration({days: $days}))
RETURN v.id AS venue_id, v.name AS venue, o.status AS status, count(o) AS operations
ORDER BY venue, status

// name: zones_without_camera
// description: Coverage gaps: zones of a venue that no camera monitors, overlooks or observes.
// param: venue_id uuid -- the venue
// param: limit int 1..1000 = 200
MATCH (z:WorldNode:Zone) WHERE z.customer_id = $customer_id AND z.venue_id = $venue_id
  AND NOT EXISTS {
    MATCH (c:Camera)-[r:MONITORS|OVERLOOKS|OBSERVED_IN]-(z)
    WHERE c.customer_id = $customer_id AND r.customer_id = $customer_id
      AND (r.valid_to IS NULL OR r.valid_to > datetime())
  }
RETURN z.id AS zone_id, z.name AS zone, z.description AS description
ORDER BY zone
LIMIT $limit

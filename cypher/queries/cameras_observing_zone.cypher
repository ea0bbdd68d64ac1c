// name: cameras_observing_zone
// description: Cameras that monitor, overlook or observe a named zone (or any node) of a venue, with the kind of link and its confidence.
// param: venue_id uuid -- the venue
// param: zone string -- name of the zone (case-insensitive)
MATCH (z:WorldNode) WHERE z.customer_id = $customer_id AND z.venue_id = $venue_id
  AND toLower(z.name) = toLower($zone)
MATCH (c:Camera)-[r:MONITORS|OVERLOOKS|OBSERVED_IN]-(z)
WHERE c.customer_id = $customer_id AND r.customer_id = $customer_id
  AND (r.valid_to IS NULL OR r.valid_to > datetime())
RETURN z.id AS zone_id, z.name AS zone, c.id AS camera_id, c.name AS camera,
       type(r) AS link, r.confidence AS confidence
ORDER BY confidence DESC, camera

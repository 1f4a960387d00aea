-- What the reporting queries need: completed rides by day (fares per driver per day) and
-- failed videos (failure reasons with counts) read only their own rows.
CREATE INDEX views_completed_rides ON views (updated_at, (view -> 'state' ->> 'driver_id'))
    WHERE aggregate_type = 'ride' AND status_family = 'completed';
CREATE INDEX views_failed_videos ON views ((view -> 'state' ->> 'failure_reason'))
    WHERE aggregate_type = 'video' AND status_family = 'failed';

-- 0006_rejected_orders_retention: rejected orders are kept for a documented time
-- (rejected_orders_retention_days), then purged by the master in batches through the
-- rejected_orders view (migration 0005). The partial index makes each purge batch an
-- index range scan over the rejected orders only.

CREATE INDEX orders_rejected_decided_idx ON orders (decided_at) WHERE status = 'rejected';

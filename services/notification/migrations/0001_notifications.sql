-- One notification per event: the unique event_id is the deduplication key.
CREATE TABLE IF NOT EXISTS notifications (
    id UUID PRIMARY KEY,
    seq BIGSERIAL NOT NULL UNIQUE,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    order_id TEXT,
    message TEXT NOT NULL,
    event JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_order ON notifications (order_id);

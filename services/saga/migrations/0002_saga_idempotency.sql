-- A client's Idempotency-Key on POST /saga/execute maps to one saga.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS idempotency_key TEXT UNIQUE;

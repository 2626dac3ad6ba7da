//! API tests (being written).

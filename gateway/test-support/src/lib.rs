//! Fakes and spawn helpers for the gateway tests.

//! Order service API tests: one binary, a module per feature; storage tests run on memory and PG.

// Tests may unwrap: a panic is the failure report (the workspace lint is for service code).
#![allow(clippy::unwrap_used)]

mod helpers;
mod orders;
mod validation;

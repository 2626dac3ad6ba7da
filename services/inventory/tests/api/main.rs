//! Inventory service API tests: one binary, a module per feature; storage tests run on memory and PG.

mod helpers;
mod inventory;

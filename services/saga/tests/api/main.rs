//! Saga orchestrator tests against the real services in-process (memory), with the saga store on
//! memory and on PostgreSQL: success, compensation paths, and crash/resume.

// Tests may unwrap: a panic is the failure report (the workspace lint is for service code).
#![allow(clippy::unwrap_used)]

mod helpers;
mod recovery;
mod saga;

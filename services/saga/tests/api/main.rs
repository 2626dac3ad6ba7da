//! Saga orchestrator tests against the real services in-process (memory), with the saga store on
//! memory and on PostgreSQL: success, compensation paths, and crash/resume.

mod helpers;
mod recovery;
mod saga;

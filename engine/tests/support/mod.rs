//! Helpers shared by integration tests that need more than the engine: a real FreeSWITCH.
#![allow(dead_code)]

pub mod fs_harness;

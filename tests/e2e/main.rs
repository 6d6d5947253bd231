//! End-to-end tests: the real server (redb store, mutual TLS) on 127.0.0.1:0, driven as clients
//! drive it. One test binary; each module is a group of scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod scene;
mod support;

mod audit;
mod cli;
mod consent;
mod crash;
mod disclosure;
mod foundation;
mod interop;
mod linkage;
mod locations;
mod locations_population;
mod plaintext;
mod population;
mod qualifications;
mod security;
mod shutdown;

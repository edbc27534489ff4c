//! Helpers shared by the end-to-end tests: peer discovery, free ports, fixtures.

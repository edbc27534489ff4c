//! Integration tests of sluice-media.

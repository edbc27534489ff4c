//! One seeded power-loss round of `sluice serve` (to be written).

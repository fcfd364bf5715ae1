//! rumq benchmarks: see `benches/` for the criterion targets.

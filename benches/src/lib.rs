//! rumq benchmarks: criterion targets in `benches/`, the `rumq-load` load generator in
//! `src/bin`, and its scenarios in [`load`].
pub mod load;

#![no_main]
//! libFuzzer target: see `polarway::fuzz::plan`. With `POLARWAY_FUZZ_SEEDS=<dir>` set, the seed
//! corpus is written to that directory first.

libfuzzer_sys::fuzz_target!(
    init: polarway::fuzz::init("plan", std::env::var_os("POLARWAY_FUZZ_SEEDS").map(Into::into)),
    |data: &[u8]| polarway::fuzz::plan(data)
);

#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netc::fuzz::parse_check(data));

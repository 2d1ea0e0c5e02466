#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netc::fuzz::onnx_import(data));

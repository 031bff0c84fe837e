#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airflow_entrypoint_fuzz::targets::mysql(data));
